"""OpenTelemetry tracing of one service, configured by the standard ``OTEL_*`` variables.

Off unless an exporter is asked for: with no ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` and no
``OTEL_TRACES_EXPORTER``, :class:`Tracing` holds a no-op tracer, installs no middleware and no
library instrumentation, so the gateway's hot path pays nothing. When on, each app owns its
``TracerProvider`` (never the global one): ``create_app`` builds it and instruments FastAPI,
the lifespan calls :meth:`Tracing.start` (exporters, httpx and aiohttp client
instrumentation) and :meth:`Tracing.shutdown` (flush, uninstrument).

Variables read: ``OTEL_SDK_DISABLED``, ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``,
``none``; comma-separated), ``OTEL_EXPORTER_OTLP_PROTOCOL`` / ``…_TRACES_PROTOCOL``
(``http/protobuf`` or ``grpc``), ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``…_TRACES_ENDPOINT``,
``OTEL_SERVICE_NAME`` (default ``mlfleet-<service>``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER`` / ``…_ARG``; the SDK itself reads ``OTEL_BSP_*`` and
``OTEL_EXPORTER_OTLP_HEADERS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import NoOpTracer, SpanKind, Tracer

UNTRACED_PATHS = "healthz,readyz,metrics"
"""Paths (regexes) whose requests never start a trace."""


@dataclass(frozen=True)
class TracingConfig:
    """What the ``OTEL_*`` variables ask for."""

    service_name: str
    exporters: tuple[str, ...] = ()
    protocol: str = "http/protobuf"
    endpoint: str | None = None
    """OTLP traces endpoint: a full URL for HTTP (``…/v1/traces``), ``host:port`` or URL for gRPC."""
    sampler: str = "parentbased_always_on"
    sampler_arg: float = 1.0
    resource_attributes: dict[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.exporters)

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] = os.environ) -> TracingConfig:
        name = env.get("OTEL_SERVICE_NAME") or f"mlfleet-{service}"
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls(service_name=name)
        traces_endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        base_endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
        if protocol not in {"http/protobuf", "grpc"}:
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: mlfleet exports http/protobuf or grpc")
        default_exporter = "otlp" if traces_endpoint or base_endpoint else "none"
        exporters = tuple(e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", default_exporter).split(",")
                          if e.strip() and e.strip().lower() != "none")
        unknown = set(exporters) - {"otlp", "console"}
        if unknown:
            raise ValueError(f"OTEL_TRACES_EXPORTER names unknown exporters: {sorted(unknown)}")
        endpoint = traces_endpoint
        if endpoint is None and base_endpoint:
            endpoint = base_endpoint if protocol == "grpc" else base_endpoint.rstrip("/") + "/v1/traces"
        return cls(
            service_name=name, exporters=exporters, protocol=protocol, endpoint=endpoint,
            sampler=env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower(),
            sampler_arg=float(env.get("OTEL_TRACES_SAMPLER_ARG") or 1.0),
            resource_attributes=_key_values(env.get("OTEL_RESOURCE_ATTRIBUTES", "")),
        )


def _key_values(text: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
    return {key.strip(): value.strip() for key, value in pairs}


def build_sampler(name: str, arg: float) -> Sampler:
    """The SDK's samplers by their ``OTEL_TRACES_SAMPLER`` names, wrapped in :class:`BackgroundClientSampler`."""
    samplers: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(arg),
        "parentbased_always_on": ParentBased(ALWAYS_ON),
        "parentbased_always_off": ParentBased(ALWAYS_OFF),
        "parentbased_traceidratio": ParentBased(TraceIdRatioBased(arg)),
    }
    if name not in samplers:
        raise ValueError(f"OTEL_TRACES_SAMPLER={name!r} is not one of {sorted(samplers)}")
    return BackgroundClientSampler(samplers[name])


class BackgroundClientSampler(Sampler):
    """Drops client spans that have no parent: the routing-table poll, the monitor's blocking
    ``XREADGROUP`` and other background calls would otherwise each start a trace of one span.
    Client calls made while serving a traced request keep their parent's decision."""

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str, kind: SpanKind | None = None,
                      attributes=None, links=None, trace_state=None) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"BackgroundClientSampler{{{self._delegate.get_description()}}}"


def build_exporter(config: TracingConfig, name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter(service_name=config.service_name)
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(endpoint=config.endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=config.endpoint)


class Tracing:
    """The tracing of one app: a no-op tracer when off, an app-owned provider when on."""

    def __init__(self, config: TracingConfig) -> None:
        self.config = config
        self.provider: TracerProvider | None = None
        self.tracer: Tracer = NoOpTracer()
        self._processors: list[SpanProcessor] = []
        if config.enabled:
            resource = Resource.create({**config.resource_attributes, "service.name": config.service_name})
            self.provider = TracerProvider(resource=resource, sampler=build_sampler(config.sampler, config.sampler_arg))
            self.tracer = self.provider.get_tracer("mlfleet")

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] = os.environ) -> Tracing:
        return cls(TracingConfig.from_env(service, env))

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    @property
    def active_tracer(self) -> Tracer | None:
        """The tracer when tracing is on, else ``None`` (for :func:`span` on hot paths)."""
        return self.tracer if self.provider is not None else None

    def instrument_app(self, app: FastAPI) -> None:
        """Server spans for every request (not health or metrics); call before the app starts.
        Responses carry ``X-Trace-Id``."""
        if self.provider is None:
            return
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=self.provider, excluded_urls=UNTRACED_PATHS,
                                           client_response_hook=_trace_id_header, exclude_spans=["receive"])

    def start(self, exporters: Sequence[SpanExporter] = ()) -> None:
        """From the lifespan: export spans and trace outgoing HTTP (httpx, aiohttp) calls.

        ``exporters`` replace the configured ones (tests)."""
        if self.provider is None:
            return
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        for exporter in exporters or [build_exporter(self.config, name) for name in self.config.exporters]:
            processor = BatchSpanProcessor(exporter)
            self.provider.add_span_processor(processor)
            self._processors.append(processor)
        # Library instrumentation patches the client classes (that is how OTel instruments them),
        # bound to this app's provider; one process serves one app.
        HTTPXClientInstrumentor().instrument(tracer_provider=self.provider)
        AioHttpClientInstrumentor().instrument(tracer_provider=self.provider)

    def instrument_redis(self, client) -> None:
        """Client spans for the commands of one Redis client (only inside a traced operation)."""
        if self.provider is None:
            return
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def shutdown(self) -> None:
        """From the lifespan: flush pending spans, stop exporting, remove the client instrumentation."""
        if self.provider is None:
            return
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().uninstrument()
        AioHttpClientInstrumentor().uninstrument()
        self.provider.shutdown()


def _trace_id_header(send_span: trace.Span, scope: dict, message: dict) -> None:
    """Add ``X-Trace-Id`` (unless the route set it) and the server span's ``traceparent`` to a response."""
    if message.get("type") != "http.response.start":
        return
    server = getattr(send_span, "parent", None)
    if server is None or not server.is_valid:
        return
    headers = message.setdefault("headers", [])
    if not any(name.lower() == b"x-trace-id" for name, _ in headers):
        headers.append((b"x-trace-id", format(server.trace_id, "032x").encode()))
    traceparent = f"00-{server.trace_id:032x}-{server.span_id:016x}-{int(server.trace_flags):02x}"
    headers.append((b"traceparent", traceparent.encode()))


def trace_id_of(span: trace.Span) -> str | None:
    """The span's trace id as 32 hex digits, ``None`` for a non-recording (untraced) span."""
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def current_trace_id() -> str | None:
    return trace_id_of(trace.get_current_span())


def trace_headers() -> dict[str, str] | None:
    """W3C trace-context headers (``traceparent``) of the active span, ``None`` when nothing is traced."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the active span, ``None`` when nothing is traced."""
    headers = trace_headers()
    return headers.get("traceparent") if headers else None


def context_from_traceparent(traceparent: str | None) -> Context | None:
    """The remote parent a ``traceparent`` names (``None`` when absent)."""
    if not traceparent:
        return None
    return extract({"traceparent": traceparent})


UNTRACED = nullcontext()
"""What :func:`span` gives when tracing is off: entering it costs a fraction of a microsecond."""


def span(tracer: Tracer | None, name: str, *, kind: SpanKind = SpanKind.INTERNAL,
         context: Context | None = None) -> AbstractContextManager[trace.Span | None]:
    """A span made current for a ``with`` block, or (``tracer`` is ``None``) nothing at all:
    the hot path checks ``if span:`` before setting attributes, so an untraced request builds none."""
    if tracer is None:
        return UNTRACED
    return tracer.start_as_current_span(name, kind=kind, context=context)
