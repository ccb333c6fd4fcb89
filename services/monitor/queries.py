"""Answer the monitor's read questions from the stored aggregates."""

from __future__ import annotations

from services.common.errors import ModelNotFound
from services.monitor.schemas import ModelList, ModelMetrics, ModelSummary
from services.monitor.stats import merge, resolve_window, summarize
from services.monitor.store import AggregateStore


async def list_models(store: AggregateStore) -> ModelList:
    data = [ModelSummary(model=model, versions=await store.versions(model)) for model in await store.models()]
    return ModelList(data=data, count=len(data))


async def model_metrics(store: AggregateStore, model: str, *, window_s: float | None, start: float | None,
                        end: float | None, now: float, retention_s: float) -> ModelMetrics:
    """Per-version metrics of ``model`` over a window; every version ever seen is listed."""
    buckets = resolve_window(window_s=window_s, start=start, end=end, now=now, retention_s=retention_s)
    versions = await store.versions(model)
    if not versions:
        raise ModelNotFound(f"the monitor has seen no events of model {model!r}", model=model)
    metrics = [summarize(version, merge(await store.read(model, version, buckets.buckets()))) for version in versions]
    return ModelMetrics(model=model, window=buckets.window(), versions=metrics)
