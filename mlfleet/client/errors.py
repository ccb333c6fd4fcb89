"""Errors the client raises: one per problem the fleet reports, each carrying its problem+json fields."""

from __future__ import annotations

from typing import Any

import httpx


class FleetError(Exception):
    """Base of every error raised by :mod:`mlfleet.client`."""


class PackagingError(FleetError, ValueError):
    """The model, its data or its signature cannot make a version (raised before anything is sent)."""


class InvalidInstances(FleetError, ValueError):
    """Instances the client cannot send as a predict request (raised before anything is sent)."""


class FleetUnreachable(FleetError):
    """No HTTP answer: connection refused, DNS failure or timeout."""

    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(self.describe(url, cause))
        self.url = url
        self.cause = cause

    @staticmethod
    def describe(url: str, cause: Exception) -> str:
        return f"{url}: {type(cause).__name__}: {cause or 'no answer'}"


class OutcomeUnknown(FleetUnreachable):
    """A change was sent but its answer never came (the connection dropped or timed out while waiting): it may have
    been applied. Look before sending it again (``versions list``, ``keys list``, the audit log): a registration is
    found by its artifact's digest, a second rollback in a row is refused, but a second key would be made."""

    @staticmethod
    def describe(url: str, cause: Exception) -> str:
        return (f"{url}: sent, but no answer came ({type(cause).__name__}: {cause or 'no answer'}); it may have been "
                "applied: check before sending it again")


class NotConfirmed(FleetError, TimeoutError):
    """A traffic change the registry applied whose revision the gateway did not confirm serving (it was stalled,
    unreachable, or slower than the wait): sending the change again is not needed."""

    def __init__(self, model: str, revision: int, why: str) -> None:
        super().__init__(f"the registry applied revision {revision} of {model}; the gateway has not confirmed serving "
                         f"it: {why}")
        self.model = model
        self.revision = revision


class ApiError(FleetError):
    """A service answered with an error; the fields are those of its RFC 9457 problem."""

    def __init__(self, problem: dict[str, Any], *, status: int, method: str, url: str) -> None:
        self.problem = problem
        self.status = status
        self.method = method
        self.url = url
        self.code: str = problem.get("code") or f"http-{status}"
        self.title: str = problem.get("title") or httpx.codes.get_reason_phrase(status)
        self.detail: str = problem.get("detail") or self.title
        self.type: str | None = problem.get("type")
        self.instance: str | None = problem.get("instance")
        self.reasons: list[str] = list(problem.get("reasons") or [])
        self.errors: list[dict[str, Any]] = list(problem.get("errors") or [])
        super().__init__(f"{status} {self.title}: {self.detail}")


class BadRequest(ApiError):
    """400, 413, 415: the request could not be read."""


class Unauthorized(ApiError):
    """401: no API key, or an unknown one."""


class Forbidden(ApiError):
    """403: the key's role does not allow this."""


class NotFound(ApiError):
    """404."""


class ModelNotFound(NotFound):
    pass


class VersionNotFound(NotFound):
    pass


class Conflict(ApiError):
    """409."""


class RolloutConflict(Conflict):
    pass


class InvalidInput(ApiError):
    """422: the request was understood and refused; see :attr:`errors`."""


class VersionRejected(InvalidInput):
    """422 ``version-rejected``: the validation gate refused the version; see :attr:`reasons`."""


class ServerError(ApiError):
    """5xx other than 503 and 504."""


class ServiceUnavailable(ServerError):
    """503: a backend (Redis, Triton, the database) is unreachable; retried before it is raised."""


class GatewayTimeout(ServerError):
    """504."""


class RateLimited(ApiError):
    """429: the key's rate limit is spent for now (the problem's ``Retry-After`` says for how long)."""


_BY_CODE: dict[str, type[ApiError]] = {
    "model-not-found": ModelNotFound,
    "version-not-found": VersionNotFound,
    "rollout-conflict": RolloutConflict,
    "version-rejected": VersionRejected,
}
_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: BadRequest,
    415: BadRequest, 422: InvalidInput, 429: RateLimited, 503: ServiceUnavailable, 504: GatewayTimeout,
}


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed error of a non-2xx answer; a body that is not problem+json keeps its text as detail."""
    try:
        body = response.json()
    except ValueError:
        body = None
    problem = body if isinstance(body, dict) else {"detail": response.text.strip()[:2000]}
    status = response.status_code
    kind = _BY_CODE.get(problem.get("code", "")) or _BY_STATUS.get(status)
    if kind is None:
        kind = ServerError if status >= 500 else ApiError
    return kind(problem, status=status, method=response.request.method, url=str(response.request.url))
