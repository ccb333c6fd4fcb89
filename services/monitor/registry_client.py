"""The registry as the monitor sees it: reference profiles and traffic splits over HTTP, cached.

Profiles never change once a version is registered, so they are cached for
``profile_cache_s``; a version the registry does not know (or a registry that does not
answer) is cached for a tenth of that, so a version registered later is picked up soon and
an unreachable registry is not hammered.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

logger = logging.getLogger("mlfleet.monitor.registry")


class RegistryUnavailable(Exception):
    """The registry did not answer, or answered with an error other than 404."""


class RegistryClient:
    def __init__(self, base_url: str, *, api_key: str | None, timeout_s: float, profile_cache_s: float) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers=headers)
        self._profile_cache_s = profile_cache_s
        self._profiles: dict[tuple[str, int], tuple[float, dict[str, Any] | None]] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def reference_profile(self, model: str, version: int) -> dict[str, Any] | None:
        """The version's ``reference_profile``; ``None`` when the registry has none for it."""
        now = time.monotonic()
        cached = self._profiles.get((model, version))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            body = await self._get(f"/v1/models/{model}/versions/{version}")
        except RegistryUnavailable as exc:
            logger.warning("no reference profile for %s v%d: %s", model, version, exc)
            self._profiles[(model, version)] = (now + self._profile_cache_s / 10, None)
            return None
        profile = (body or {}).get("reference_profile") or None
        ttl = self._profile_cache_s if profile else self._profile_cache_s / 10
        self._profiles[(model, version)] = (now + ttl, profile)
        return profile

    async def traffic(self, model: str) -> dict[str, Any] | None:
        """The model's traffic split as the registry reports it; ``None`` for a model it does not know."""
        return await self._get(f"/v1/models/{model}/traffic")

    async def _get(self, path: str) -> dict[str, Any] | None:
        try:
            response = await self._http.get(path)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(f"registry unreachable: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryUnavailable(f"registry answered {response.status_code} on {path}")
        return response.json()
