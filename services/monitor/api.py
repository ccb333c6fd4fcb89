"""HTTP routes of the monitor: thin wrappers over :mod:`queries` and the consumer."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from services.common.errors import PROBLEM_JSON
from services.common.schemas import MODEL_NAME_PATTERN
from services.monitor import queries
from services.monitor.deps import ConsumerDep, SettingsDep, StoreDep
from services.monitor.schemas import ConsumerStats, ModelList, ModelMetrics


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {}}}


UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: _problem("Redis is not reachable")}

models = APIRouter(prefix="/v1/models", tags=["models"], responses=UNAVAILABLE)
stats = APIRouter(prefix="/v1/stats", tags=["stats"], responses=UNAVAILABLE)


@models.get("", operation_id="models-list", response_model=ModelList)
async def list_models(store: StoreDep) -> ModelList:
    """Models the monitor has seen events of, with their versions."""
    return await queries.list_models(store)


@models.get(
    "/{model}/metrics",
    operation_id="models-metrics",
    response_model=ModelMetrics,
    responses={404: _problem("No events of this model"), 422: _problem("Invalid window")},
)
async def model_metrics(
    store: StoreDep,
    settings: SettingsDep,
    model: Annotated[str, Path(pattern=MODEL_NAME_PATTERN)],
    window_s: Annotated[float | None, Query(gt=0, description="The last N seconds (default 300).")] = None,
    start: Annotated[float | None, Query(ge=0, description="Window start, unix seconds (with `end`).")] = None,
    end: Annotated[float | None, Query(ge=0, description="Window end, unix seconds (with `start`).")] = None,
) -> ModelMetrics:
    """Per-version requests, errors, latency percentiles, scores and variants over a window."""
    return await queries.model_metrics(store, model, window_s=window_s, start=start, end=end, now=time.time(),
                                       retention_s=settings.bucket_ttl_s)


@stats.get("", operation_id="stats-get", response_model=ConsumerStats)
async def consumer_stats(consumer: ConsumerDep) -> ConsumerStats:
    """Progress of the stream consumer: events counted, rejected, pending and lag."""
    return await consumer.stats()
