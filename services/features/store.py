"""Adapter around ``feast.FeatureStore``: apply, materialize, online lookup, push.

The Feast SDK's synchronous calls (apply, materialize, registry reads) run in a worker thread;
online lookups and pushes use Feast's async API against Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import pandas as pd
from feast import FeatureStore, FeatureView
from feast.data_source import PushMode
from feast.infra.offline_stores.file_source import FileSource
from redis.exceptions import RedisError

from services.common.errors import BackendUnavailable
from services.features.catalog import Catalog, FieldSpec, ViewSpec
from services.features.definitions import FeatureRepo


@dataclass(frozen=True)
class Interval:
    start: datetime
    end: datetime


class FeastStore:
    """The fleet's feature repo in one ``FeatureStore``; registry writes run one at a time."""

    def __init__(self, store: FeatureStore, repo: FeatureRepo) -> None:
        self._store = store
        self._repo = repo
        self._registry_writes = anyio.Lock()

    async def apply(self) -> Catalog:
        """Register the repo's objects (idempotent) and describe what the registry now holds."""
        async with self._registry_writes:
            return await anyio.to_thread.run_sync(self._apply)

    def _apply(self) -> Catalog:
        self._store.apply(self._repo.objects())
        return Catalog(tuple(_view_spec(fv) for fv in self._feature_views()))

    async def close(self) -> None:
        await self._store.close()

    async def online(self, refs: list[str], entities: dict[str, list[Any]]) -> dict[str, list[Any]]:
        """Values per requested ``view:field`` in entity-row order; None where nothing is stored."""
        try:
            response = await self._store.get_online_features_async(
                features=refs, entity_rows=entities, full_feature_names=True
            )
        except RedisError as exc:
            raise BackendUnavailable(f"online store unavailable: {exc}") from exc
        values = response.to_dict()
        return {ref: values[ref.replace(":", "__", 1)] for ref in refs}

    async def push(self, push_source: str, frame: pd.DataFrame) -> None:
        try:
            await self._store.push_async(push_source, frame, to=PushMode.ONLINE)
        except RedisError as exc:
            raise BackendUnavailable(f"online store unavailable: {exc}") from exc

    async def materialize(self, *, start: datetime | None, end: datetime) -> dict[str, Interval]:
        """Materialize ``[start, end]`` and return the interval each view was materialized over.

        Without ``start`` it is incremental: from each view's last run, or ``end - ttl``.
        """
        try:
            async with self._registry_writes:
                return await anyio.to_thread.run_sync(self._materialize, start, end)
        except RedisError as exc:
            raise BackendUnavailable(f"online store unavailable: {exc}") from exc

    def _materialize(self, start: datetime | None, end: datetime) -> dict[str, Interval]:
        if start is None:
            self._store.materialize_incremental(end_date=end)
        else:
            self._store.materialize(start_date=start, end_date=end)
        intervals = {}
        for fv in self._feature_views():
            if fv.materialization_intervals:
                last_start, last_end = fv.materialization_intervals[-1]
                intervals[fv.name] = Interval(last_start, last_end)
        return intervals

    def _feature_views(self) -> list[FeatureView]:
        return self._store.list_feature_views(allow_cache=False)


def _view_spec(fv: FeatureView) -> ViewSpec:
    source = fv.batch_source
    return ViewSpec(
        name=fv.name,
        entities=tuple(fv.entities),
        join_keys=tuple(FieldSpec(f.name, str(f.dtype)) for f in fv.entity_columns),
        fields=tuple(FieldSpec(f.name, str(f.dtype)) for f in fv.features),
        ttl=fv.ttl,
        push_source=fv.stream_source.name if fv.stream_source is not None else None,
        offline_path=source.path if isinstance(source, FileSource) else None,
    )
