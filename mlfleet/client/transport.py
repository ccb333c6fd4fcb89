"""What the sync and async clients share about sending: headers, retries, reading answers."""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx

from mlfleet.client.calls import Call
from mlfleet.client.config import ClientConfig
from mlfleet.client.errors import (FleetUnreachable, GatewayTimeout, OutcomeUnknown, ServiceUnavailable,
                                   error_from_response)

try:
    CLIENT_VERSION = version("mlfleet")
except PackageNotFoundError:
    CLIENT_VERSION = "dev"

RETRIED_STATUS = 503
"""Only "service unavailable" is retried: the fleet's services answer it before acting on a request."""
WATCH_OUTAGE_S = 60.0
"""How long a watch keeps polling through a registry it cannot reach (a restart, a failover) before it gives up."""
TRANSIENT_ERRORS = (FleetUnreachable, ServiceUnavailable, GatewayTimeout)
"""Errors a watch polls through for up to :data:`WATCH_OUTAGE_S`."""
PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, capped; a ``Retry-After`` in seconds wins when shorter than the cap."""

    base_s: float = 0.25
    cap_s: float = 5.0

    def delay(self, attempt: int, response: httpx.Response) -> float:
        retry_after = response.headers.get("retry-after", "")
        if retry_after.replace(".", "", 1).isdigit():
            return min(float(retry_after), self.cap_s)
        return random.uniform(0, min(self.cap_s, self.base_s * 2**attempt))


def default_headers(config: ClientConfig, actor: str | None) -> dict[str, str]:
    headers = {"User-Agent": f"mlfleet-client/{CLIENT_VERSION}", "Accept": "application/json"}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    if actor:
        headers["X-Mlfleet-Actor"] = actor
    return headers


def request_kwargs(config: ClientConfig, call: Call) -> dict[str, Any]:
    """Arguments of ``httpx.Client.request`` for ``call``."""
    timeout = max(config.timeout_s, call.timeout_s or 0.0)
    kwargs: dict[str, Any] = {"params": call.params or None, "headers": call.headers or None, "timeout": timeout}
    if call.files is not None:
        kwargs["files"] = call.files
        kwargs["data"] = call.data
    elif call.json is not None:
        kwargs["json"] = call.json
    return kwargs


def should_retry(call: Call, response: httpx.Response, attempt: int, retries: int) -> bool:
    """A 503 is sent again, up to ``retries`` times. A call that is not idempotent (a ``POST`` or ``PATCH`` unless it
    says so) is only when the 503 is a service's own problem document, answered before acting: one from a proxy or
    mesh in between may come after the service acted (an upstream reset), and registering a version or rolling
    back twice is not the same as once. Predictions and feedback are idempotent: sent again on any 503."""
    if response.status_code != RETRIED_STATUS or attempt >= retries:
        return False
    return call.is_idempotent or response.headers.get("content-type", "").startswith(PROBLEM_JSON)


def transport_error(call: Call, url: str, exc: httpx.TransportError) -> FleetUnreachable:
    """The error of a call that got no HTTP answer: :class:`OutcomeUnknown` when a change may have reached the
    service (anything but a failed connection), else :class:`FleetUnreachable`."""
    if call.is_idempotent or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return FleetUnreachable(url, exc)
    return OutcomeUnknown(url, exc)


def answer(call: Call, response: httpx.Response):
    """The typed body of a 2xx answer, or the typed error of any other."""
    if response.is_success:
        return call.read(response.content)
    raise error_from_response(response)
