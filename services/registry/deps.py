"""Dependency aliases of the registry's routes, read from the container on ``app.state``.

``ViewerDep`` … ``AdminDep`` authenticate the caller's ``Authorization: Bearer <key>`` and
require at least that role (401 without a valid key, 403 with too small a role); the
identity's name is the actor written to the audit log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.common.auth import Identity, Role, bearer_key, require_role
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


def requires(role: Role) -> Callable[..., Awaitable[Identity]]:
    """A dependency: the caller's identity, which must hold ``role`` or more."""

    async def authenticated(
        request: Request,
        registry: RegistryDep,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Identity:
        identity = await registry.keys.authenticate(bearer_key(request.headers.get("authorization")))
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
