"""The dashboard's series: rates over the seconds each step holds (unit test over in-memory aggregates)."""

from __future__ import annotations

import pytest

from services.monitor import queries
from services.monitor.stats import BUCKET_S

NOW = 100_005.0
"""5 s into the bucket that is still filling."""


class SteadyTraffic:
    """10 requests/s in every bucket; the current one holds the 5 s so far."""

    async def versions(self, model: str) -> list[int]:
        return [1]

    async def read(self, model: str, version: int, buckets: range) -> list[dict]:
        return [{"requests": 10 * (NOW - b * BUCKET_S if b == int(NOW // BUCKET_S) else BUCKET_S)} for b in buckets]


class NoLabels:
    async def rows_per_bucket(self, model: str, version: int, buckets: range) -> list[list]:
        return [[] for _ in buckets]


async def test_the_newest_point_rates_the_seconds_it_holds_not_the_whole_step():
    series = await queries.model_series(SteadyTraffic(), NoLabels(), "m", window_s=120, step_s=30, now=NOW,
                                        retention_s=1e6)
    points = series.versions[0].points
    assert points[-1].requests == 50, "the bucket still filling"
    assert [p.request_rate for p in points] == pytest.approx([10.0] * len(points))
