"""The predict route's HTTP handling, served ahead of FastAPI's middleware stack, and below ASGI when it can be.

A prediction is mostly spent outside the prediction itself: py-spy on the full path at 16
connections put about a quarter of the gateway's CPU in the app's middlewares (FastAPI's body
limit and exception telemetry, the Prometheus instrumentator, Starlette's error and exception
layers, routing) around a route that already checks its own body size and renders its own
errors. So ``POST /v1/models/{model}/predict`` is answered by :class:`PredictFrontDoor`, with the
same contract as the documented route: the same problem+json errors, the same security headers,
and every answer counted in ``mlfleet_gateway_predict_responses_total``. It answers in one of two places:

- below ASGI: the gateway's HTTP protocol (:mod:`services.gateway.http_protocol`) asks
  :meth:`PredictFrontDoor.direct` once a request's headers have arrived, and answers a plain predict
  request itself (uvicorn's ASGI layer cost ~54 µs of CPU per request here);
- on ASGI messages, before the app's middlewares (:meth:`PredictFrontDoor.serve`), for a predict request
  the protocol left to the app (a chunked body, ``Expect: 100-continue``, a query string) or when the
  gateway runs without its protocol.

It steps aside (the request goes through the app and its middlewares) when tracing is on, so the
request gets its server span, and for cross-origin requests, which need the CORS middleware.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import orjson
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from services.common.errors import PROBLEM_JSON, BadRequest, InvalidInput, MlfleetError, PayloadTooLarge, UnsupportedMediaType
from services.common.http_security import API_HEADERS
from services.common.request_ids import MAX_REQUEST_ID_LENGTH, new_request_id
from services.common.telemetry import current_trace_id
from services.gateway.predictions import RequestContext
from services.gateway.resources import Gateway
from services.gateway.schemas import PredictRequest

logger = logging.getLogger("mlfleet.gateway.hot_path")


PREFIX, SUFFIX = "/v1/models/", "/predict"
PROBLEM_JSON_BYTES = PROBLEM_JSON.encode()
FRONT_DOOR_STATE = "mlfleet.predict_front_door"
"""The key of the :class:`PredictFrontDoor` in the app's lifespan state."""
DIRECT_HEADERS = frozenset({"origin", "expect", "transfer-encoding", "upgrade"})
"""A request with any of these headers goes through the app (:meth:`PredictFrontDoor.direct`)."""
SECURITY_HEADERS = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in API_HEADERS.items()]
SECURITY_HEAD = b"".join(name + b": " + value + b"\r\n" for name, value in SECURITY_HEADERS)
"""The security headers as header lines, encoded once for every answer written below ASGI."""


class ClientGone(Exception):
    """The client disconnected before its body arrived; nothing is answered."""


def invalid_body(exc: ValidationError) -> MlfleetError:
    """The problem for a body that is not a valid :class:`PredictRequest` (400 if not JSON at all, else 422)."""
    errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
              for e in exc.errors(include_url=False)]
    if any(e["type"] == "json_invalid" for e in errors):
        return BadRequest("Request body is not valid JSON", errors=errors)
    return InvalidInput("Request failed validation", errors=errors)


def new_trace_id() -> str:
    """128 random bits as 32 hex digits (a W3C trace id's form). Not a secret, so the ``random`` module's generator,
    not ``uuid4``'s ``os.urandom`` system call."""
    return f"{random.getrandbits(128):032x}"


def request_ids(headers: Mapping[str, str]) -> tuple[str, str]:
    """``X-Request-Id`` (or a new UUIDv7, which tells the monitor when it was made) and the trace id: the server
    span's when tracing is on, else the W3C ``traceparent`` header's (or a new one)."""
    request_id = headers.get("x-request-id") or new_request_id()
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise BadRequest(f"X-Request-Id is {len(request_id)} characters long; at most {MAX_REQUEST_ID_LENGTH} "
                         "(feedback names a prediction by it)")
    traced = current_trace_id()
    if traced is not None:
        return request_id, traced
    parts = headers.get("traceparent", "").split("-")
    trace_id = parts[1] if len(parts) == 4 and len(parts[1]) == 32 else new_trace_id()
    return request_id, trace_id


def check_body_size(headers: Mapping[str, str], limit: int) -> None:
    """Refuse (413) a body whose declared size exceeds ``limit`` before reading it."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit}", limit=limit)


async def answer_prediction(gateway: Gateway, model: str, headers: Mapping[str, str],
                            body: bytes) -> tuple[bytes, RequestContext]:
    """The JSON answer to one predict request (headers with lower-case names), or the :class:`MlfleetError` to render."""
    content_type = headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(f"expected application/json, got {content_type or 'no content type'}")
    try:
        payload = PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_body(exc) from None
    pinned_version = headers.get("x-mlfleet-version")
    if pinned_version is not None:
        await gateway.pinning.authorize(headers.get("authorization"))
    ctx = RequestContext.begin(*request_ids(headers))
    answer = await gateway.predictor.predict(model, payload, ctx, pinned_version=pinned_version)
    return answer.json(), ctx


def text_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers as text (names already in lower case, as uvicorn gives them), the last of a repeated one."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}


def predict_path_model(path: str) -> str | None:
    """The model of a ``/v1/models/{model}/predict`` path (one non-empty segment), else ``None``."""
    if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
        return None
    model = path[len(PREFIX):-len(SUFFIX)]
    return model if model and "/" not in model else None


@dataclass(slots=True)
class Reply:
    """One predict answer, ready to write: status, body, content type and the headers it adds to the security
    headers."""

    status: int
    body: bytes
    content_type: bytes
    headers: list[tuple[bytes, bytes]]


def problem_reply(error: MlfleetError, path: str, request_id: str | None) -> Reply:
    extra = [(name.lower().encode("latin-1"), str(value).encode("latin-1")) for name, value in error.headers.items()]
    if request_id is not None:
        extra.append((b"x-request-id", request_id.encode("latin-1")))
    return Reply(error.status, orjson.dumps(error.to_problem(path)), PROBLEM_JSON_BYTES, extra)


async def predict_reply(gateway: Gateway, path: str, model: str, headers: Mapping[str, str], body: bytes) -> Reply:
    """The answer to a predict request whose body has been read, counted in ``predict_responses_total``; every
    error is a problem+json answer (an unexpected one is logged, and answered 500)."""
    try:
        with gateway.busy_poll:
            answer, ctx = await answer_prediction(gateway, model, headers, body)
    except MlfleetError as exc:
        reply = problem_reply(exc, path, headers.get("x-request-id"))
    except Exception:
        logger.exception("unhandled error on POST %s (request id %s)", path, headers.get("x-request-id", "-"))
        reply = problem_reply(MlfleetError("An unexpected error occurred; it has been logged."), path,
                              headers.get("x-request-id"))
    else:
        reply = Reply(200, answer, b"application/json",
                      [(b"x-request-id", ctx.request_id.encode("latin-1")), (b"x-trace-id", ctx.trace_id.encode("latin-1"))])
    gateway.metrics.predict_responses_by_status(str(reply.status)).inc()
    return reply


class PredictFrontDoor:
    """Answers ``POST /v1/models/{model}/predict`` for the app whose gateway it is given (:attr:`gateway`, set once
    the app's lifespan has opened it): straight on ASGI messages when the app calls :meth:`serve` first, or below
    ASGI when the gateway's HTTP protocol asks :meth:`direct` (:mod:`services.gateway.http_protocol`)."""

    def __init__(self, *, traced: Callable[[], bool]) -> None:
        self._traced = traced
        self.gateway: Gateway | None = None

    def direct(self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[str, dict[str, str]] | None:
        """The model and the headers (names in lower case) of a request the HTTP protocol may answer itself, once
        its body has arrived, with :func:`predict_reply`; ``None`` for any other request, which goes through the app:
        another method or path, a query string, a fragment or an escaped path, tracing on, a cross-origin call, a body
        without a declared length or larger than the limit (the app answers 413 without reading it),
        ``Expect: 100-continue``, or an upgrade."""
        gateway = self.gateway
        if gateway is None or method != b"POST" or b"?" in url or b"%" in url or b"#" in url or self._traced():
            return None
        model = predict_path_model(url.decode("latin-1"))
        if model is None:
            return None
        fields = text_headers(headers)
        declared = fields.get("content-length", "")
        if (not declared.isdigit() or int(declared) > gateway.settings.max_body_bytes
                or not DIRECT_HEADERS.isdisjoint(fields)):
            return None
        return model, fields

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Whether this answered the request (else the app must)."""
        if scope["type"] != "http" or scope["method"] != "POST" or self.gateway is None:
            return False
        model = predict_path_model(scope["path"])
        if model is None or self._traced():
            return False
        headers = text_headers(scope["headers"])
        if "origin" in headers:
            return False
        await self._predict(self.gateway, scope, receive, send, model, headers)
        return True

    async def _predict(self, gateway: Gateway, scope: Scope, receive: Receive, send: Send, model: str,
                       headers: dict[str, str]) -> None:
        try:
            check_body_size(headers, gateway.settings.max_body_bytes)
            body = await read_body(receive, gateway.settings.max_body_bytes)
        except ClientGone:
            return
        except MlfleetError as exc:
            reply = problem_reply(exc, scope["path"], headers.get("x-request-id"))
            gateway.metrics.predict_responses_by_status(str(reply.status)).inc()
        else:
            reply = await predict_reply(gateway, scope["path"], model, headers, body)
        await send({"type": "http.response.start", "status": reply.status, "headers": reply_headers(reply)})
        await send({"type": "http.response.body", "body": reply.body})


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request body from ASGI messages, refused with 413 as soon as it exceeds ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def reply_headers(reply: Reply) -> list[tuple[bytes, bytes]]:
    return [*own_headers(reply), *SECURITY_HEADERS]


def own_headers(reply: Reply) -> list[tuple[bytes, bytes]]:
    """The headers of ``reply`` itself, before the security headers every answer carries."""
    return [(b"content-type", reply.content_type), (b"content-length", str(len(reply.body)).encode()), *reply.headers]
