"""Answer the monitor's read questions from the stored aggregates and feedback."""

from __future__ import annotations

from services.common.errors import InvalidInput, ModelNotFound, VersionNotFound
from services.monitor.feedback import FeedbackStore, quality
from services.monitor.schemas import ModelList, ModelMetrics, ModelSeries, ModelSummary, SeriesPoint, VersionSeries
from services.monitor.stats import (
    BUCKET_S, LATENCY_EDGES_MS, histogram, latency_summary, merge, resolve_window, summarize,
)
from services.monitor.store import AggregateStore

MAX_SERIES_POINTS = 720


async def list_models(store: AggregateStore) -> ModelList:
    data = [ModelSummary(model=model, versions=await store.versions(model)) for model in await store.models()]
    return ModelList(data=data, count=len(data))


async def known_versions(store: AggregateStore, model: str) -> list[int | None]:
    versions = await store.versions(model)
    if not versions:
        raise ModelNotFound(f"the monitor has seen no events of model {model!r}", model=model)
    return versions


async def known_version(store: AggregateStore, model: str, version: int | None) -> int:
    """``version`` if the monitor has seen it, or the newest version seen when ``None``."""
    versions = [v for v in await known_versions(store, model) if v is not None]
    if version is None and versions:
        return max(versions)
    if version not in versions:
        raise VersionNotFound(f"the monitor has seen no predictions of {model} v{version}", model=model,
                              version=version)
    return version


async def model_metrics(store: AggregateStore, model: str, *, window_s: float | None, start: float | None,
                        end: float | None, now: float, retention_s: float,
                        feedback: FeedbackStore | None = None, max_window_s: float | None = None) -> ModelMetrics:
    """Per-version metrics of ``model`` over a window; every version ever seen is listed."""
    buckets = resolve_window(window_s=window_s, start=start, end=end, now=now, retention_s=retention_s,
                             max_window_s=max_window_s)
    versions = await known_versions(store, model)
    metrics = []
    for version in versions:
        summary = summarize(version, merge(await store.read(model, version, buckets.buckets())))
        if feedback is not None and version is not None:
            summary.quality = quality(await feedback.rows(model, version, buckets.buckets()))
        metrics.append(summary)
    return ModelMetrics(model=model, window=buckets.window(), versions=metrics)


def observed_s(step: range, now: float) -> float:
    """Seconds of traffic a step's buckets hold: the whole step, except for one that ends after ``now`` (the bucket
    still filling), which holds up to ``now``: dividing its requests by the whole step made the newest point's rate
    drop by up to half."""
    start, end = step.start * BUCKET_S, step.stop * BUCKET_S
    return max(min(end, now) - start, 1.0)


async def model_series(store: AggregateStore, feedback: FeedbackStore, model: str, *, window_s: float,
                       step_s: int, now: float, retention_s: float, max_window_s: float | None = None) -> ModelSeries:
    """Request rate, error rate, latency percentiles and accuracy per version, step by step."""
    if step_s % BUCKET_S:
        raise InvalidInput(f"step_s must be a multiple of {BUCKET_S}")
    buckets = resolve_window(window_s=window_s, start=None, end=None, now=now, retention_s=retention_s,
                             max_window_s=max_window_s)
    per_step = step_s // BUCKET_S
    steps = [range(b, min(b + per_step, buckets.last + 1)) for b in range(buckets.first, buckets.last + 1, per_step)]
    if len(steps) > MAX_SERIES_POINTS:
        raise InvalidInput(f"more than {MAX_SERIES_POINTS} points; use a longer step_s or a shorter window_s")
    series = []
    for version in await known_versions(store, model):
        aggregates = await store.read(model, version, buckets.buckets())
        labels = await feedback.rows_per_bucket(model, version, buckets.buckets()) if version is not None else []
        points = []
        for i, step in enumerate(steps):
            total = merge(aggregates[i * per_step:i * per_step + len(step)])
            requests = int(total.get("requests", 0))
            latency = latency_summary(histogram(total, "lat", len(LATENCY_EDGES_MS)), int(total.get("lat_sum_us", 0)))
            joined = quality([row for rows in labels[i * per_step:i * per_step + len(step)] for row in rows])
            points.append(SeriesPoint(
                t=step.start * BUCKET_S, requests=requests, request_rate=requests / observed_s(step, now),
                error_rate=int(total.get("errors", 0)) / requests if requests else None,
                p50_ms=latency.p50 if latency else None, p95_ms=latency.p95 if latency else None,
                p99_ms=latency.p99 if latency else None, accuracy=joined.accuracy if joined else None,
                labelled=joined.labelled if joined else 0,
            ))
        series.append(VersionSeries(version=version, points=points))
    return ModelSeries(model=model, step_s=step_s, window=buckets.window(), versions=series)
