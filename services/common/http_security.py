"""Browser-facing hardening of every service: security headers, CORS, and a cap on request bodies.

:class:`SecurityHeaders` is a pure ASGI middleware (it wraps ``send`` and appends headers to
``http.response.start``) so it costs the gateway's predict route a few list operations, not a
``BaseHTTPMiddleware`` round trip. Every answer gets ``nosniff``, ``DENY`` framing and no referrer;
JSON answers get a Content-Security-Policy that allows nothing and ``Cache-Control: no-store``.
The monitor's dashboard (same-origin scripts and styles) gets a policy it works under; the
Swagger and ReDoc pages, which load their assets from a CDN, get none.

CORS is Starlette's ``CORSMiddleware``, installed only when a service lists allowed origins.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import PayloadTooLarge, problem_response

API_POLICY = "default-src 'none'; frame-ancestors 'none'"
DASHBOARD_POLICY = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
"""The dashboard loads its own scripts and styles; uPlot sets inline styles on the charts it draws."""

COMMON_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer"}
API_HEADERS = {**COMMON_HEADERS, "content-security-policy": API_POLICY, "cache-control": "no-store"}

PAGE_HEADERS: tuple[tuple[str, dict[str, str]], ...] = (
    ("/docs", COMMON_HEADERS),
    ("/redoc", COMMON_HEADERS),
    ("/dashboard", {**COMMON_HEADERS, "content-security-policy": DASHBOARD_POLICY, "cache-control": "no-store"}),
    ("/static/", {**COMMON_HEADERS, "content-security-policy": DASHBOARD_POLICY}),
)
"""Paths (prefixes) that serve pages or their assets rather than JSON, and the headers they get instead."""

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

RawHeaders = list[tuple[bytes, bytes]]


def _raw(headers: dict[str, str]) -> RawHeaders:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


class SecurityHeaders:
    """Adds the security headers of the request's path to each response (never replacing one the app set), and
    refuses request bodies larger than ``max_body_bytes`` (``None``: the routes check sizes themselves)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._api_headers = _raw(API_HEADERS)
        self._page_headers = [(prefix, _raw(headers)) for prefix, headers in PAGE_HEADERS]

    def headers_for(self, path: str) -> RawHeaders:
        for prefix, headers in self._page_headers:
            if path.startswith(prefix):
                return headers
        return self._api_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.headers_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(header for header in extra if header[0] not in present)
                message["headers"] = headers
            await send(message)

        if self.max_body_bytes is not None and scope["method"] in BODY_METHODS:
            refused = self._declared_too_large(scope)
            if refused is not None:
                await refused(scope, receive, send_with_headers)
                return
            receive = self._capped(receive)
        await self.app(scope, receive, send_with_headers)

    def _declared_too_large(self, scope: Scope) -> Response | None:
        """A 413 problem when the request's ``Content-Length`` already exceeds the limit."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_body_bytes:
                    return problem_response(PayloadTooLarge(
                        f"body of {int(value)} bytes exceeds the limit of {self.max_body_bytes}",
                        limit=self.max_body_bytes), Request(scope))
                break
        return None

    def _capped(self, receive: Receive) -> Receive:
        """``receive`` that fails with 413 once a streamed (chunked) body passes the limit."""
        limit = self.max_body_bytes
        received = 0

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise StarletteHTTPException(413, f"body exceeds the limit of {limit} bytes")
            return message

        return capped


def install_http_security(app: FastAPI, *, cors_origins: Sequence[str] = (), max_body_bytes: int | None = None) -> None:
    """Security headers and the body cap on every answer of ``app``; CORS for ``cors_origins`` when any are given.

    Call after :func:`services.common.errors.install_error_handlers`: the catch-all 500 is answered outside the
    middleware stack, so its handler is wrapped to carry the same headers.
    """
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-Id", "X-Mlfleet-Version",
                                          "X-Mlfleet-Routing-Key", "traceparent"],
                           expose_headers=["X-Request-Id", "X-Trace-Id", "Retry-After"], max_age=600)
    app.add_middleware(SecurityHeaders, max_body_bytes=max_body_bytes)
    unexpected = app.exception_handlers.get(Exception)
    if unexpected is not None:
        async def unexpected_with_headers(request: Request, exc: Exception) -> Response:
            response = await unexpected(request, exc)
            for name, value in API_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        app.add_exception_handler(Exception, unexpected_with_headers)
