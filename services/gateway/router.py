"""Which version serves a request: pure functions over a model's traffic policy.

A routing key hashes to a bucket in [0, 100) with 0.01 resolution; the canary serves the
buckets below ``canary_percent``. The bucket of a key never changes, so raising the
percentage only moves keys from stable to canary, and one user stays on one version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from services.common.errors import BackendUnavailable, InvalidInput, ModelNotFound, VersionNotFound
from services.common.schemas import ModelRoute, RoutingTable, Variant, VersionRoute

BUCKETS = 10_000
"""Buckets per 100 %: 0.01 % resolution."""


def bucket_of(model: str, routing_key: str) -> float:
    """The key's fixed position in [0, 100) for ``model``, in steps of 0.01. The model is hashed with the key, so each
    model's canary takes a different share of the callers: one key (a user) is not in every model's canary at once,
    where a bad canary would harm the same people each time and the models' canaries would be judged on each other's
    effects."""
    digest = hashlib.blake2b(f"{model}\x00{routing_key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") % BUCKETS) / 100


@dataclass(slots=True)
class Choice:
    """The version a request goes to and why."""

    version: VersionRoute
    variant: Variant


def choose(route: ModelRoute, routing_key: str) -> Choice:
    """Canary for keys whose bucket is below ``canary_percent``, stable for the rest."""
    canary, stable = canary_of(route), stable_of(route)
    if canary is not None and (stable is None or bucket_of(route.model, routing_key) < route.canary_percent):
        return Choice(canary, Variant.canary)
    if stable is None:
        raise BackendUnavailable(f"model {route.model!r} has no version in service")
    return Choice(stable, Variant.stable)


def pinned(route: ModelRoute, header_value: str) -> Choice:
    """The version named by ``X-Mlfleet-Version``; it must be one the policy names."""
    try:
        number = int(header_value)
    except ValueError:
        raise InvalidInput(f"X-Mlfleet-Version must be a version number, got {header_value!r}") from None
    version = route.version_route(number)
    if version is None:
        raise VersionNotFound(f"model {route.model!r} has no version {number} in its traffic policy")
    return Choice(version, Variant.pinned)


def stable_of(route: ModelRoute) -> VersionRoute | None:
    return route.version_route(route.stable) if route.stable is not None else None


def canary_of(route: ModelRoute) -> VersionRoute | None:
    return route.version_route(route.canary) if route.canary is not None else None


def shadow_of(route: ModelRoute) -> VersionRoute | None:
    return route.version_route(route.shadow) if route.shadow is not None else None


class RouteBook:
    """An immutable, indexed routing table; replaced whole when the policy changes."""

    __slots__ = ("table", "_by_model")

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self._by_model = {route.model: route for route in table.models}

    @property
    def revision(self) -> int:
        return self.table.revision

    def route(self, model: str) -> ModelRoute:
        route = self._by_model.get(model)
        if route is None:
            raise ModelNotFound(f"model {model!r} is not served by this gateway")
        return route

    def version(self, model: str, version: int) -> VersionRoute:
        found = self.route(model).version_route(version)
        if found is None:
            raise VersionNotFound(f"model {model!r} has no version {version} in its traffic policy")
        return found
