"""Dependency aliases of the registry's routes, read from the container on ``app.state``.

``ViewerDep`` … ``AdminDep`` authenticate the caller's ``Authorization: Bearer <key>`` and
require at least that role (401 without a valid key, 403 with too small a role); the
identity's name is the actor written to the audit log. Each request also counts against the
key's rate limit, if it has one (429 over it), except ``whoami``: the gateway and the monitor
ask it about their own callers' keys, and those calls count where the caller made them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.common.auth import Identity, Role, bearer_key, enforce_rate_limit, require_role
from services.common.rate_limit import KeyRateLimiter
from services.registry.catalog import Catalog
from services.registry.container import Registry
from services.registry.keys import KeyStore
from services.registry.rollout import RolloutController
from services.registry.traffic import TrafficController

_bearer = HTTPBearer(auto_error=False, description="An mlfleet API key.")


def _registry(request: Request) -> Registry:
    return request.app.state.registry


RegistryDep = Annotated[Registry, Depends(_registry)]


def _catalog(registry: RegistryDep) -> Catalog:
    return registry.catalog


def _traffic(registry: RegistryDep) -> TrafficController:
    return registry.traffic


def _rollouts(registry: RegistryDep) -> RolloutController:
    return registry.rollouts


def _keys(registry: RegistryDep) -> KeyStore:
    return registry.keys


def _rate_limiter(request: Request) -> KeyRateLimiter:
    return request.app.state.rate_limiter


def requires(role: Role, *, counted: bool = True) -> Callable[..., Awaitable[Identity]]:
    """A dependency: the caller's identity, which must hold ``role`` or more; ``counted`` against its rate limit."""

    async def authenticated(
        request: Request,
        registry: RegistryDep,
        limiter: Annotated[KeyRateLimiter, Depends(_rate_limiter)],
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Identity:
        key = bearer_key(request.headers.get("authorization"))
        identity = await registry.keys.authenticate(key)
        if counted:
            enforce_rate_limit(limiter, key, identity)
        return require_role(identity, role)

    return authenticated


CatalogDep = Annotated[Catalog, Depends(_catalog)]
TrafficDep = Annotated[TrafficController, Depends(_traffic)]
RolloutsDep = Annotated[RolloutController, Depends(_rollouts)]
KeysDep = Annotated[KeyStore, Depends(_keys)]
ViewerDep = Annotated[Identity, Depends(requires(Role.viewer))]
ScientistDep = Annotated[Identity, Depends(requires(Role.scientist))]
DeployerDep = Annotated[Identity, Depends(requires(Role.deployer))]
AdminDep = Annotated[Identity, Depends(requires(Role.admin))]
KeyCheckDep = Annotated[Identity, Depends(requires(Role.viewer, counted=False))]
"""Any valid key, not counted against its rate limit (``whoami``)."""
