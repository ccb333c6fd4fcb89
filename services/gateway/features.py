"""Online features from Feast's Redis store, read in process with the async API (one call per micro-batch).

The store is opened with a registry cache that never expires inside a read (``cache_mode: thread``, TTL 0), so no
lookup ever re-reads the Feast registry on the event loop; :meth:`FeatureReader.start` refreshes it in a worker
thread every ``registry_refresh_s`` instead (new feature views reach the gateway within that period).

Feast's first read in a process builds its async Redis client and imports its read path (about a second of work on a
busy machine, past the lookup deadline); :meth:`FeatureReader.warm_up` pays that before the gateway serves.

A refused Redis connection fails a lookup at once (503, see :func:`services.common.feature_store.
feast_redis_connection_string`); a Redis that accepts but does not answer runs into ``timeout_s`` (504).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from feast import FeatureStore
from feast.types import String
from prometheus_client import Histogram

from services.common.errors import BackendUnavailable, FeatureLookupTimeout
from services.gateway.tensors import FeatureColumns

logger = logging.getLogger("mlfleet.gateway.features")


class FeatureReader:
    def __init__(self, store: FeatureStore, *, timeout_s: float, latency: Histogram, registry_refresh_s: float) -> None:
        self._store = store
        self._timeout_s = timeout_s
        self._latency = latency
        self._registry_refresh_s = registry_refresh_s
        self._refresher: asyncio.Task | None = None

    def start(self) -> None:
        self._refresher = asyncio.create_task(self._refresh_registry(), name="gateway-feast-registry-refresh")

    async def lookup(self, features: Sequence[str], entity_rows: list[dict[str, Any]]) -> FeatureColumns:
        """Values of ``features`` (``view:field``) per entity row, keyed by ``view:field``; ``None`` when absent."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._store.get_online_features_async(
                    features=list(features), entity_rows=entity_rows, full_feature_names=True
                )
        except TimeoutError:
            raise FeatureLookupTimeout(f"online feature lookup took longer than {self._timeout_s}s") from None
        except Exception as exc:  # Feast raises many types (registry, Redis, proto); all mean "no features now"
            logger.warning("feature lookup failed: %s", exc)
            raise BackendUnavailable(f"online feature store failed: {type(exc).__name__}: {exc}") from None
        finally:
            self._latency.observe(time.perf_counter() - started)
        columns = response.to_dict()
        return {feature: columns[feature.replace(":", "__", 1)] for feature in features}

    async def warm_up(self, timeout_s: float = 15.0) -> None:
        """Look up one absent entity in every feature view. Failing (Redis down at start) only logs: the gateway
        still starts, and lookups answer 503 until Redis is back."""
        try:
            async with asyncio.timeout(timeout_s):
                views = await asyncio.to_thread(self._store.list_feature_views)
                for view in views:
                    entity = {column.name: "" if column.dtype == String else 0 for column in view.entity_columns}
                    await self._store.get_online_features_async(features=[f"{view.name}:{view.features[0].name}"],
                                                                entity_rows=[entity])
        except Exception as exc:  # any failure only means the first request pays the warm-up
            logger.warning("could not warm up the feature store: %s", exc)

    async def _refresh_registry(self) -> None:
        while True:
            await asyncio.sleep(self._registry_refresh_s)
            try:
                await asyncio.to_thread(self._store.refresh_registry)
            except Exception as exc:  # keep serving from the cached registry; the next period tries again
                logger.warning("could not refresh the Feast registry: %s", exc)

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self._store.close()
