"""Materialization: load the offline sources into the online store and say what was loaded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.common.errors import Conflict, InvalidInput
from services.features.catalog import Catalog, ViewSpec
from services.features.definitions import EVENT_TIMESTAMP
from services.features.store import FeastStore, Interval


class NoOfflineData(Conflict):
    code, title = "no-offline-data", "No offline data"


@dataclass(frozen=True)
class MaterializedView:
    name: str
    start: datetime
    end: datetime
    rows: int
    """Offline rows inside the interval."""
    entities: int
    """Distinct entities written to the online store (the latest row of each)."""


async def materialize(
    store: FeastStore,
    catalog: Catalog,
    *,
    start: datetime | None,
    end: datetime | None,
    now: datetime,
) -> list[MaterializedView]:
    """Materialize every view over ``[start, end]``; incrementally when ``start`` is None."""
    end = as_utc(end) if end is not None else now
    start = as_utc(start) if start is not None else None
    if start is not None and start > end:
        raise InvalidInput(f"start {start.isoformat()} is after end {end.isoformat()}")
    missing = [
        v.offline_path
        for v in catalog.views
        if v.offline_path and not Path(v.offline_path).exists()
    ]
    if missing:
        raise NoOfflineData("no offline data; run the demo or write the source", missing=missing)
    intervals = await store.materialize(start=start, end=end)
    return await anyio.to_thread.run_sync(_summaries, catalog, intervals)


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive time is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _summaries(catalog: Catalog, intervals: dict[str, Interval]) -> list[MaterializedView]:
    summaries = []
    for view in catalog.views:
        interval = intervals.get(view.name)
        if interval is not None:
            rows, entities = _count(view, interval)
            summaries.append(
                MaterializedView(view.name, interval.start, interval.end, rows, entities)
            )
    return summaries


def _count(view: ViewSpec, interval: Interval) -> tuple[int, int]:
    """Rows and distinct entities of the view's offline file in ``interval`` (ends included)."""
    if view.offline_path is None:
        return 0, 0
    keys = [k.name for k in view.join_keys]
    table = pq.read_table(view.offline_path, columns=[*keys, EVENT_TIMESTAMP])
    stamps = table[EVENT_TIMESTAMP]
    inside = pc.and_(
        pc.greater_equal(stamps, as_utc(interval.start)),
        pc.less_equal(stamps, as_utc(interval.end)),
    )
    selected = table.filter(inside)
    entities = selected.group_by(keys).aggregate([]).num_rows if keys else min(selected.num_rows, 1)
    return selected.num_rows, entities
