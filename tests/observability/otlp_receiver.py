"""A real OTLP/HTTP trace receiver for tests: protobuf (the Python SDK) and JSON (Triton).

It listens on a free loopback port, decodes every ``POST /v1/traces`` into :class:`ReceivedSpan`
and keeps them in memory for assertions.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: str
    attributes: dict = field(default_factory=dict)
    encoding: str = "protobuf"


def _any_value(value: AnyValue):
    which = value.WhichOneof("value")
    return getattr(value, which) if which in {"string_value", "bool_value", "int_value", "double_value"} else str(value)


def _json_value(value: dict):
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    return value


def _json_id(value: str | None) -> str | None:
    """OTLP/JSON ids are hex; accept base64 too (some exporters used it)."""
    if not value:
        return None
    if len(value) in (16, 32) and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    return base64.b64decode(value).hex()


def spans_from_protobuf(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _any_value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(ReceivedSpan(
                    service=str(resource.get("service.name", "")), name=span.name, trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(), parent_id=span.parent_span_id.hex() or None,
                    kind=SPAN_KINDS.get(span.kind, str(span.kind)),
                    attributes={a.key: _any_value(a.value) for a in span.attributes},
                ))
    return spans


def spans_from_json(body: bytes) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in json.loads(body).get("resourceSpans", []):
        resource = {a["key"]: _json_value(a.get("value", {})) for a in resource_spans.get("resource", {}).get("attributes", [])}
        for scope_spans in resource_spans.get("scopeSpans", resource_spans.get("instrumentationLibrarySpans", [])):
            for span in scope_spans.get("spans", []):
                kind = span.get("kind", 0)
                spans.append(ReceivedSpan(
                    service=str(resource.get("service.name", "")), name=span["name"], trace_id=_json_id(span["traceId"]),
                    span_id=_json_id(span["spanId"]), parent_id=_json_id(span.get("parentSpanId")),
                    kind=SPAN_KINDS.get(kind, str(kind)) if isinstance(kind, int) else str(kind).removeprefix("SPAN_KIND_"),
                    attributes={a["key"]: _json_value(a.get("value", {})) for a in span.get("attributes", [])},
                    encoding="json",
                ))
    return spans


class OtlpReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests: list[str] = []
        """Content type of every export received."""
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, predicate: Callable[[], bool], *, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return predicate()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/traces":
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                content_type = self.headers.get("content-type", "").split(";")[0].strip()
                try:
                    spans = spans_from_json(body) if content_type == "application/json" else spans_from_protobuf(body)
                except Exception as exc:  # a malformed export is the sender's bug: answer 400 with why
                    self.send_error(400, str(exc))
                    return
                with receiver._lock:
                    receiver.spans.extend(spans)
                    receiver.requests.append(content_type)
                if content_type == "application/json":
                    payload, reply_type = b"{}", "application/json"
                else:
                    payload, reply_type = ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
                self.send_response(200)
                self.send_header("content-type", reply_type)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        return Handler
