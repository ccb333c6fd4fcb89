"""Checking a caller's API key in a service that does not own keys (the gateway, the monitor).

The registry owns keys; :class:`RemoteAuthorizer` asks its ``GET /v1/auth/whoami`` with the
caller's key and caches the answer (by the key's hash, never the key) for ``ttl_s``, so a
revoked key stops working within that time. Each authorizer guards one kind of action and
requires one role for it, and holds the keys' rate limits (from the same answer) for this process.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import httpx
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.common.auth import Identity, Role, bearer_key, enforce_rate_limit, hash_key, require_role
from services.common.errors import BackendUnavailable, Unauthorized
from services.common.rate_limit import KeyRateLimiter

MAX_CACHED_KEYS = 1024
logger = logging.getLogger("mlfleet.auth")


class RemoteAuthorizer:
    def __init__(self, *, registry_url: str, role: Role, timeout_s: float, ttl_s: float,
                 limiter: KeyRateLimiter | None = None) -> None:
        self.role = role
        self.limiter = limiter or KeyRateLimiter()
        self._http = httpx.AsyncClient(base_url=registry_url, timeout=timeout_s)
        self._ttl_s = ttl_s
        self._cache: OrderedDict[str, tuple[float, Identity | None]] = OrderedDict()

    async def authorize(self, authorization: str | None) -> Identity:
        """The caller's identity when its key holds :attr:`role`; 401 without a valid key, 429 over the key's
        rate limit, 403 below the role, 503 when the registry cannot be asked."""
        key = bearer_key(authorization)
        identity = await self._identity(key)
        if identity is None:
            raise Unauthorized("the API key is unknown or revoked")
        enforce_rate_limit(self.limiter, key, identity)
        return require_role(identity, self.role)

    async def _identity(self, key: str) -> Identity | None:
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        identity = await self._whoami(key)
        self._cache[digest] = (time.monotonic() + self._ttl_s, identity)
        self._cache.move_to_end(digest)
        while len(self._cache) > MAX_CACHED_KEYS:
            self._cache.popitem(last=False)
        return identity

    async def _whoami(self, key: str) -> Identity | None:
        """The registry's answer for ``key``; ``None`` when it does not know the key."""
        try:
            response = await self._http.get("/v1/auth/whoami", headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError as exc:
            logger.warning("registry unreachable while checking an API key: %s", type(exc).__name__)
            raise BackendUnavailable("cannot check the API key: the registry is not reachable") from None
        if response.status_code == 401:
            return None
        if response.status_code != 200:
            raise BackendUnavailable(f"cannot check the API key: the registry answered {response.status_code}")
        return Identity.model_validate_json(response.content)

    async def close(self) -> None:
        await self._http.aclose()


def remote_caller(role: Role, authorizer_of: Callable[[Request], RemoteAuthorizer]) -> Callable[..., Awaitable[Identity]]:
    """A route dependency: the caller's identity, checked by the request's authorizer (``authorizer_of``, which
    requires ``role``); the OpenAPI docs show the route's bearer authentication."""
    bearer = HTTPBearer(auto_error=False, description=f"An mlfleet API key of role {role.value} or above.")

    # a default, not ``Annotated[…, Depends(bearer)]``: postponed annotations are resolved in the module's globals,
    # where this function's ``bearer`` is not
    async def caller(request: Request, _credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Identity:
        """401 without a valid key, 403 below the role, 503 when the registry cannot be asked."""
        return await authorizer_of(request).authorize(request.headers.get("authorization"))

    return caller
