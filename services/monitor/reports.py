"""Drift reports: a version's live window against its reference profile, and their history.

Keys: ``mlfleet:monitor:drift:{model}:{version}`` (history list, newest first, capped),
``…:drift-last:{model}:{version}`` (identity of the last recorded window) and
``…:drift-worst:{model}:{version}`` (the most drifted window so far), each expiring ``ttl_s``
after the version's last recorded window, as its aggregates do: a retired version's history
goes with them. A window is recorded once — whichever replica gets there first — so the
history and the alerts it raises do not depend on how many monitors run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import orjson
import redis.asyncio as aioredis

from services.monitor.drift import (
    SCORE_FEATURE, DriftThresholds, FeatureDrift, compare, corrected_alpha, drift_score, most_shifted_bin,
    parse_reference, verdict,
)
from services.monitor.registry_client import RegistryClient
from services.monitor.samples import LiveWindow, SampleStore
from services.monitor.schemas import DriftPoint, DriftReport, Example, LiveWindowInfo
from services.monitor.store import PREFIX

EXAMPLES = 5
JUDGED = ("ok", "retrain", "rollback")

_RECORD_ONCE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"""
"""KEYS[1] last window id, KEYS[2] history, KEYS[3] worst window (its TTL renewed); ARGV[1] this window's id, ARGV[2]
its point, ARGV[3] history length, ARGV[4] TTL in seconds. 1 if recorded, 0 if already there."""


def history_key(model: str, version: int) -> str:
    return f"{PREFIX}:drift:{model}:{version}"


@dataclass(frozen=True)
class WindowSpec:
    kind: Literal["count", "time"]
    size: int
    window_s: float


def examples(window: LiveWindow, features: list[FeatureDrift]) -> list[Example]:
    """Requests whose value of the most moved feature lies where live traffic gained most over training."""
    inputs = [f for f in features if f.feature in window.features]
    if not inputs or window.size == 0:
        return []
    worst = max(inputs, key=lambda f: f.effect)
    values = window.features[worst.feature]
    where = most_shifted_bin(worst)
    if isinstance(where, tuple):
        hits = np.flatnonzero((values >= where[0]) & (values < where[1]))
    elif where is not None:
        hits = np.flatnonzero(np.isclose(values, where))
    else:
        hits = np.arange(values.size)
    chosen = list(dict.fromkeys(int(i) for i in hits[::-1]))[:EXAMPLES] or list(range(min(EXAMPLES, values.size)))
    return [Example(request_id=window.request_ids[i], trace_id=window.trace_ids[i], feature=worst.feature,
                    value=float(values[i])) for i in chosen]


def window_info(window: LiveWindow, spec: WindowSpec) -> LiveWindowInfo:
    return LiveWindowInfo(
        kind=spec.kind, size=spec.size if spec.kind == "count" else None,
        window_s=spec.window_s if spec.kind == "time" else None, n=window.size,
        start=float(window.timestamps.min()) if window.size else None,
        end=float(window.timestamps.max()) if window.size else None,
        last_request_id=window.request_ids[-1] if window.size else None,
    )


def point(report: DriftReport) -> DriftPoint:
    results = report.features + ([report.scores] if report.scores else [])
    return DriftPoint(
        at=report.evaluated_at, window=report.window, verdict=report.verdict,
        score=drift_score(report.features), drifted_features=report.drifted_features,
        statistics={r.feature: {"ks": r.ks, "js": r.js, "psi": r.psi, "p_value": r.p_value} for r in results},
        examples=report.examples,
    )


class DriftReporter:
    def __init__(self, redis: aioredis.Redis, samples: SampleStore, registry: RegistryClient, *,
                 history_max: int, ttl_s: int) -> None:
        self._redis = redis
        self._samples = samples
        self._registry = registry
        self._history_max = history_max
        self._ttl_s = ttl_s
        self._record_once = redis.register_script(_RECORD_ONCE)

    async def window(self, model: str, version: int, spec: WindowSpec, *, now: float) -> LiveWindow:
        if spec.kind == "count":
            return await self._samples.window(model, version, size=spec.size)
        return await self._samples.window(model, version, since=now - spec.window_s)

    async def report(self, model: str, version: int, spec: WindowSpec, thresholds: DriftThresholds, *,
                     history: int = 0, now: float | None = None) -> tuple[DriftReport, LiveWindow]:
        now = time.time() if now is None else now
        window = await self.window(model, version, spec, now=now)
        reference = parse_reference(await self._registry.reference_profile(model, version))
        features, scores = compare(reference, window.features, window.scores, thresholds)
        judged = features + ([scores] if scores else [])
        outcome = verdict(judged, n=window.size, thresholds=thresholds, has_reference=not reference.empty)
        drifted = [f.feature for f in features if f.action != "none"] if outcome in ("retrain", "rollback") else []
        points = await self.history(model, version, history) if history else []
        report = DriftReport(
            model=model, version=version, evaluated_at=now, window=window_info(window, spec), thresholds=thresholds,
            corrected_alpha=corrected_alpha(len(judged), thresholds), verdict=outcome, drifted_features=drifted,
            features=features, scores=scores, examples=examples(window, features),
            worst_window=await self.worst(model, version) if history else None, history=points,
        )
        return report, window

    async def record(self, report: DriftReport, window: LiveWindow) -> bool:
        """Append the report's window to the history unless it is already there; ``True`` if this call did."""
        if report.verdict not in JUDGED or window.last_entry is None:
            return False
        entry = point(report)
        worst_key = f"{PREFIX}:drift-worst:{report.model}:{report.version}"
        recorded = await self._record_once(
            keys=[f"{PREFIX}:drift-last:{report.model}:{report.version}", history_key(report.model, report.version),
                  worst_key],
            args=[f"{window.last_entry}:{window.size}", entry.model_dump_json(), self._history_max, self._ttl_s],
        )
        if recorded:
            worst = await self.worst(report.model, report.version)
            if worst is None or (entry.verdict != "ok", entry.score) > (worst.verdict != "ok", worst.score):
                await self._redis.set(worst_key, entry.model_dump_json(), ex=self._ttl_s)
        return bool(recorded)

    async def history(self, model: str, version: int, limit: int) -> list[DriftPoint]:
        raw = await self._redis.lrange(history_key(model, version), 0, limit - 1)
        return [DriftPoint.model_validate(orjson.loads(item)) for item in raw]

    async def worst(self, model: str, version: int) -> DriftPoint | None:
        raw = await self._redis.get(f"{PREFIX}:drift-worst:{model}:{version}")
        return DriftPoint.model_validate(orjson.loads(raw)) if raw else None


def gauge_values(report: DriftReport) -> dict[tuple[str, str], float]:
    """``(feature, statistic) → value`` of every statistic the report holds, for Prometheus."""
    values: dict[tuple[str, str], float] = {}
    for result in report.features + ([report.scores] if report.scores else []):
        name = "score" if result.feature == SCORE_FEATURE else result.feature
        for statistic in ("ks", "js", "chi2", "psi", "p_value"):
            value = getattr(result, statistic)
            if value is not None:
                values[(name, statistic)] = float(value)
    return values
