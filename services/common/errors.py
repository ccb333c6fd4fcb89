"""One error hierarchy for the fleet, rendered as RFC 9457 problem+json.

Domain modules raise ``MlfleetError`` subclasses and never import FastAPI; the
transport layer installs :func:`install_error_handlers` to turn them, request
validation errors and anything unexpected into ``application/problem+json``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
logger = logging.getLogger("mlfleet.errors")


STANDARD_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})
"""RFC 9457's members of a problem document."""


class MlfleetError(Exception):
    """Base of every error the fleet reports to a caller."""

    status: int = 500
    code: str = "internal-error"
    title: str = "Internal error"
    headers: dict[str, str] = {}
    """Response headers the error adds (e.g. ``WWW-Authenticate`` on a 401)."""

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://mlfleet.dev/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            body["instance"] = instance
        # extension members never stand in for RFC 9457's (``instance`` is the occurrence's URI, not an index)
        body.update((name, value) for name, value in self.extra.items() if name not in STANDARD_MEMBERS)
        return body


class BadRequest(MlfleetError):
    status, code, title = 400, "bad-request", "Bad request"


class Unauthorized(MlfleetError):
    status, code, title = 401, "unauthorized", "Authentication required"
    headers = {"WWW-Authenticate": 'Bearer realm="mlfleet"'}


class Forbidden(MlfleetError):
    status, code, title = 403, "forbidden", "Not allowed"


class ModelNotFound(MlfleetError):
    status, code, title = 404, "model-not-found", "Model not found"


class VersionNotFound(MlfleetError):
    status, code, title = 404, "version-not-found", "Model version not found"


class NotFound(MlfleetError):
    status, code, title = 404, "not-found", "Not found"


class Conflict(MlfleetError):
    status, code, title = 409, "conflict", "Conflict"


class RolloutConflict(Conflict):
    code, title = "rollout-conflict", "Rollout conflict"


class PayloadTooLarge(MlfleetError):
    status, code, title = 413, "payload-too-large", "Payload too large"


class UnsupportedMediaType(MlfleetError):
    status, code, title = 415, "unsupported-media-type", "Unsupported media type"


class RetryAfter(MlfleetError):
    """An error whose answer says, in ``Retry-After`` (and the problem's ``retry_after_s``), when to try again."""

    def __init__(self, detail: str = "", *, retry_after_s: int, **extra: Any) -> None:
        super().__init__(detail, retry_after_s=retry_after_s, **extra)
        self.headers = {"Retry-After": str(retry_after_s)}


class RateLimited(RetryAfter):
    """A key made more requests than its ``rate_limit_per_minute`` allows; ``Retry-After`` says when to retry."""

    status, code, title = 429, "rate-limited", "Too many requests"


class InvalidInput(MlfleetError):
    status, code, title = 422, "invalid-input", "Invalid input"


class MissingFeatures(InvalidInput):
    code, title = "missing-features", "Missing features"


class VersionRejected(MlfleetError):
    status, code, title = 422, "version-rejected", "Version rejected by validation gate"


class BackendUnavailable(MlfleetError):
    status, code, title = 503, "backend-unavailable", "Backend unavailable"


class Overloaded(RetryAfter, BackendUnavailable):
    """More requests wait than the service queues; ``Retry-After`` says when to try again."""

    status, code, title = 503, "overloaded", "Overloaded"


class InferenceFailed(MlfleetError):
    status, code, title = 502, "inference-failed", "Inference failed"


class FeatureLookupTimeout(MlfleetError):
    status, code, title = 504, "feature-lookup-timeout", "Feature lookup timed out"


def problem_response(error: MlfleetError, request: Request | None = None) -> JSONResponse:
    instance = request.url.path if request is not None else None
    headers = dict(error.headers)
    if request is not None and "x-request-id" in request.headers:
        headers["X-Request-Id"] = request.headers["x-request-id"]
    return JSONResponse(error.to_problem(instance), status_code=error.status, media_type=PROBLEM_JSON, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        errors.append({"loc": [str(p) for p in err.get("loc", ())], "msg": err.get("msg", ""), "type": err.get("type", "")})
    return errors


HTTP_STATUS_ERRORS: dict[int, type[MlfleetError]] = {413: PayloadTooLarge, 415: UnsupportedMediaType}
"""Starlette's own HTTP errors that have a fleet error of their own (its code and title)."""

FORM_MEDIA_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})


def _wrong_media_type(request: Request, errors: list[dict[str, Any]]) -> str | None:
    """Why the body failed to parse when it was sent as the wrong media type (text/plain or a form to a JSON
    route, JSON to a form route); ``None`` otherwise. A body without a content type is parsed as JSON, as FastAPI
    does, and fails validation like any other."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    sent = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if body_field is None or not sent or not any(e["loc"][:1] == ["body"] for e in errors):
        return None
    if isinstance(body_field.field_info, params.Form):
        return None if sent in FORM_MEDIA_TYPES else f"expected multipart/form-data, got {sent}"
    if sent == "application/json" or sent.endswith("+json"):
        return None
    return f"expected application/json, got {sent}"


def install_error_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` as problem+json; never leak a stack trace."""

    @app.exception_handler(MlfleetError)
    async def _mlfleet_error(request: Request, exc: MlfleetError) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        wrong_media_type = _wrong_media_type(request, errors)
        if wrong_media_type is not None:
            return problem_response(UnsupportedMediaType(wrong_media_type), request)
        if any(e["type"] == "json_invalid" for e in errors):
            return problem_response(BadRequest("Request body is not valid JSON", errors=errors), request)
        return problem_response(InvalidInput("Request failed validation", errors=errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        known = HTTP_STATUS_ERRORS.get(exc.status_code)
        if known is not None:
            return problem_response(known(str(exc.detail)), request)
        error = MlfleetError(str(exc.detail))
        error.status, error.code, error.title = exc.status_code, f"http-{exc.status_code}", str(exc.detail)
        return problem_response(error, request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s (request id %s)", request.method, request.url.path, request.headers.get("x-request-id", "-"))
        return problem_response(MlfleetError("An unexpected error occurred; it has been logged."), request)
