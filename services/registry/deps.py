"""Dependency aliases of the registry's routes, read from the container on ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from services.registry.catalog import Catalog
from services.registry.container import Registry
from services.registry.traffic import TrafficController

ANONYMOUS = "anonymous"


def _registry(request: Request) -> Registry:
    return request.app.state.registry


RegistryDep = Annotated[Registry, Depends(_registry)]


def _catalog(registry: RegistryDep) -> Catalog:
    return registry.catalog


def _traffic(registry: RegistryDep) -> TrafficController:
    return registry.traffic


def _actor(
    x_mlfleet_actor: Annotated[str | None, Header(max_length=128, description="Who makes the change (audit log).")] = None,
) -> str:
    return x_mlfleet_actor.strip() if x_mlfleet_actor and x_mlfleet_actor.strip() else ANONYMOUS


CatalogDep = Annotated[Catalog, Depends(_catalog)]
TrafficDep = Annotated[TrafficController, Depends(_traffic)]
ActorDep = Annotated[str, Depends(_actor)]
