"""Tracing set-up from the OTEL_* variables: off by default, exporters, sampling, log correlation; Triton's launch
flags for traces and metrics."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracer, SpanKind

from mlfleet.fleet import FleetConfig
from mlfleet.runtime.triton import TritonLaunch, TritonRuntime, otlp_traces_url
from services.common.logs import JsonFormatter
from services.common.telemetry import UNTRACED, Tracing, TracingConfig, span


def test_tracing_is_off_without_an_exporter():
    tracing = Tracing.from_env("gateway", {})
    assert not tracing.enabled and tracing.active_tracer is None and isinstance(tracing.tracer, NoOpTracer)
    assert span(tracing.active_tracer, "route") is UNTRACED


def test_otlp_endpoint_turns_tracing_on_with_the_service_name():
    config = TracingConfig.from_env("monitor", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert (config.exporters, config.endpoint, config.service_name) == (("otlp",), "http://collector:4318/v1/traces",
                                                                         "mlfleet-monitor")
    grpc = TracingConfig.from_env("gateway", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
                                              "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "edge"})
    assert (grpc.protocol, grpc.endpoint, grpc.service_name) == ("grpc", "http://collector:4317", "edge")
    assert TracingConfig.from_env("gateway", {"OTEL_TRACES_EXPORTER": "console"}).exporters == ("console",)
    assert not TracingConfig.from_env("gateway", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
                                                  "OTEL_SDK_DISABLED": "true"}).enabled


@pytest.mark.parametrize("env", [{"OTEL_TRACES_EXPORTER": "zipkin"}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
                                                                     "OTEL_TRACES_EXPORTER": "otlp"}])
def test_unsupported_settings_are_refused(env):
    with pytest.raises(ValueError):
        TracingConfig.from_env("gateway", env)


def test_sampling_ratio_and_orphan_client_spans():
    never = Tracing.from_env("gateway", {"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "traceidratio",
                                         "OTEL_TRACES_SAMPLER_ARG": "0"})
    assert not never.tracer.start_span("x").is_recording()
    tracing = Tracing.from_env("gateway", {"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.tracer.start_span("poll", kind=SpanKind.CLIENT).is_recording()
    with tracing.tracer.start_as_current_span("request", kind=SpanKind.SERVER):
        assert tracing.tracer.start_span("call", kind=SpanKind.CLIENT).is_recording()


def test_spans_are_exported_and_logs_carry_their_ids():
    tracing = Tracing.from_env("gateway", {"OTEL_TRACES_EXPORTER": "console"})
    exporter = InMemorySpanExporter()
    tracing.start([exporter])
    try:
        with span(tracing.active_tracer, "route") as current:
            record = logging.LogRecord("mlfleet", logging.INFO, __file__, 1, "routed", None, None)
            entry = json.loads(JsonFormatter().format(record))
            context = current.get_span_context()
    finally:
        tracing.shutdown()
    assert entry["trace_id"] == format(context.trace_id, "032x")
    assert entry["span_id"] == format(context.span_id, "016x")
    assert [s.name for s in exporter.get_finished_spans()] == ["route"]
    assert exporter.get_finished_spans()[0].resource.attributes["service.name"] == "mlfleet-gateway"


def test_triton_traces_go_to_the_fleet_collector_over_http_only():
    assert otlp_traces_url({}) is None
    assert otlp_traces_url({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"}) == "http://jaeger:4318/v1/traces"
    assert otlp_traces_url({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) is None
    assert otlp_traces_url({"MLFLEET_TRITON_OTLP_URL": "http://t:4318/v1/traces"}) == "http://t:4318/v1/traces"


def test_triton_latency_summaries_are_opt_in(tmp_path, monkeypatch):
    runtime = TritonRuntime()
    argv, _ = TritonLaunch(workdir=tmp_path).command(runtime)
    assert not any("summary_latencies" in arg for arg in argv)
    argv, _ = TritonLaunch(workdir=tmp_path, latency_summaries=True).command(runtime)
    assert "--metrics-config=summary_latencies=true" in argv

    monkeypatch.delenv("MLFLEET_TRITON_LATENCY_SUMMARIES", raising=False)
    assert FleetConfig.from_env().triton_latency_summaries is False
    monkeypatch.setenv("MLFLEET_TRITON_LATENCY_SUMMARIES", "True")
    assert FleetConfig.from_env().triton_latency_summaries is True
    monkeypatch.setenv("MLFLEET_TRITON_LATENCY_SUMMARIES", "off")
    assert FleetConfig.from_env().triton_latency_summaries is False
    monkeypatch.setenv("MLFLEET_TRITON_LATENCY_SUMMARIES", "tru")
    with pytest.raises(ValueError, match="MLFLEET_TRITON_LATENCY_SUMMARIES='tru'"):
        FleetConfig.from_env()
