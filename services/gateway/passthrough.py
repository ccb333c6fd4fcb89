"""KServe v2 / Triton HTTP pass-through for the models in the routing table.

Metadata and health calls go through unchanged; an ``infer`` body is checked first and sent
in the form that was checked, JSON header and binary tensors (:mod:`services.gateway.
kserve_request`), so ``tritonclient.http`` works against the gateway; unversioned ``infer``
calls get the same canary routing as ``/v1`` predictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
import orjson

from services.common.errors import BackendUnavailable, InferenceFailed, MlfleetError, VersionNotFound
from services.common.schemas import PredictionEvent, Variant
from services.gateway import router
from services.gateway.events import EventWriter
from services.gateway.metrics import GatewayMetrics
from services.gateway.predictions import RequestContext
from services.gateway.router import Choice, RouteBook
from services.gateway.triton import triton_address

REQUEST_HEADERS = ("content-type", "content-encoding", "inference-header-content-length", "traceparent")
RESPONSE_HEADERS = ("content-type", "content-encoding", "inference-header-content-length")


@dataclass(frozen=True, slots=True)
class Forwarded:
    """Triton's answer, to be returned as is."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class TritonPassthrough:
    def __init__(self, *, triton_http_url: str, timeout_s: float, events: EventWriter, metrics: GatewayMetrics) -> None:
        self._session = aiohttp.ClientSession(
            base_url=f"http://{triton_address(triton_http_url)[2]}", timeout=aiohttp.ClientTimeout(total=timeout_s), auto_decompress=False
        )
        self._timeout_s = timeout_s
        self._events = events
        self._metrics = metrics

    async def server(self, path: str) -> Forwarded:
        """``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``."""
        return await self._forward("GET", path, {})

    async def model(self, book: RouteBook, model: str, version: str | None, suffix: str = "") -> Forwarded:
        """Model metadata, readiness (``/ready``) or config (``/config``) of a routed model."""
        return await self._forward("GET", model_path(book, model, version) + suffix, {})

    async def infer(self, book: RouteBook, model: str, version: str | None, body: bytes, headers: Mapping[str, str],
                    routing_key: str | None, ctx: RequestContext) -> Forwarded:
        route = book.route(model)
        if version is None:
            choice = router.choose(route, routing_key or ctx.request_id)
        else:
            choice = Choice(book.version(model, _version_number(model, version)), Variant.pinned)
        path = f"/v2/models/{model}/versions/{choice.version.version}/infer"
        try:
            forwarded = await self._forward("POST", path, headers, body)
        except MlfleetError as exc:
            if exc.status < 500:  # Triton refused the caller's tensors: not the version's failure (see Predictor)
                self._metrics.predictions.labels(model, str(choice.version.version), choice.variant.value,
                                                 "invalid").inc()
            else:
                self._record(ctx, model, choice, status="error", error_code=exc.code)
            raise
        ok = forwarded.status == 200
        self._record(ctx, model, choice, status="ok" if ok else "error", error_code=None if ok else f"triton-{forwarded.status}")
        forwarded.headers.update({"X-Mlfleet-Version": str(choice.version.version), "X-Mlfleet-Variant": choice.variant.value})
        return forwarded

    async def close(self) -> None:
        await self._session.close()

    async def _forward(self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None) -> Forwarded:
        sent = {name: headers[name] for name in REQUEST_HEADERS if name in headers}
        sent["Accept-Encoding"] = headers.get("accept-encoding", "identity")
        try:
            async with self._session.request(method, path, data=body, headers=sent) as response:
                payload = await response.read()
                kept = {name: response.headers[name] for name in RESPONSE_HEADERS if name in response.headers}
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendUnavailable(f"Triton did not answer within {self._timeout_s}s: {type(exc).__name__} {exc}") from None
        if status == 503:
            raise BackendUnavailable(f"Triton answered {status}: {_triton_error(payload)}")
        if status >= 500:
            raise InferenceFailed(f"Triton answered {status}: {_triton_error(payload)}")
        if status >= 400:
            raise TritonRejected(status, _triton_error(payload))
        return Forwarded(status, payload, kept)

    def _record(self, ctx: RequestContext, model: str, choice: Choice, *, status: str, error_code: str | None) -> None:
        version, variant = choice.version.version, choice.variant
        latency_ms = ctx.elapsed_ms()
        self._metrics.predictions.labels(model, str(version), variant.value, status).inc()
        self._metrics.prediction_latency.labels(model, variant.value).observe(latency_ms / 1000)
        self._events.enqueue(PredictionEvent(
            request_id=ctx.request_id, trace_id=ctx.trace_id, model=model, version=version, variant=variant,
            timestamp=ctx.arrived, latency_ms=latency_ms, status=status, error_code=error_code,
        ).model_dump_json().encode())


def model_path(book: RouteBook, model: str, version: str | None) -> str:
    """Triton's path for a model (version) the routing table names; 404 otherwise."""
    if version is None:
        book.route(model)
        return f"/v2/models/{model}"
    number = book.version(model, _version_number(model, version)).version
    return f"/v2/models/{model}/versions/{number}"


def _version_number(model: str, version: str) -> int:
    try:
        return int(version)
    except ValueError:
        raise VersionNotFound(f"model {model!r} has no version {version!r}") from None


class TritonRejected(MlfleetError):
    """Triton refused the request itself (bad tensor, unknown version): the caller's error, as problem+json."""

    code, title = "triton-rejected", "Triton rejected the request"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _triton_error(payload: bytes) -> str:
    """The message of Triton's ``{"error": ...}`` body, else the start of the body."""
    try:
        return str(orjson.loads(payload)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return payload[:200].decode(errors="replace")
