"""HTTP routes of the monitor: thin wrappers over the queries, reports, feedback and alerts."""

from __future__ import annotations

import time
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import HTMLResponse

from services.common.errors import PROBLEM_JSON, BackendUnavailable, ModelNotFound, PayloadTooLarge
from services.common.schemas import MODEL_NAME_PATTERN
from services.monitor import queries
from services.monitor.deps import (
    AlertsDep, ConsumerDep, FeedbackCallerDep, FeedbackDep, MetricsDep, RegistryDep, ReporterDep, SettingsDep, StoreDep,
)
from services.monitor.registry_client import RegistryUnavailable
from services.monitor.reports import WindowSpec
from services.monitor.schemas import (
    AlertList, ConsumerStats, DriftReport, FeedbackBatch, FeedbackItem, FeedbackReport, ModelList, ModelMetrics,
    ModelSeries,
)

STATIC_DIR = FilePath(__file__).parent / "static"


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_JSON: {}}}


UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: _problem("Redis is not reachable")}

models = APIRouter(prefix="/v1/models", tags=["models"], responses=UNAVAILABLE)
stats = APIRouter(prefix="/v1/stats", tags=["stats"], responses=UNAVAILABLE)
feedback = APIRouter(prefix="/v1/feedback", tags=["feedback"], responses=UNAVAILABLE)
alerts = APIRouter(prefix="/v1/alerts", tags=["alerts"], responses=UNAVAILABLE)
dashboard = APIRouter(tags=["dashboard"])

ModelName = Annotated[str, Path(pattern=MODEL_NAME_PATTERN)]


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
    labels: FeedbackDep,
    model: ModelName,
    window_s: Annotated[float | None, Query(gt=0, description="The last N seconds (default 300).")] = None,
    start: Annotated[float | None, Query(ge=0, description="Window start, unix seconds (with `end`).")] = None,
    end: Annotated[float | None, Query(ge=0, description="Window end, unix seconds (with `start`).")] = None,
) -> ModelMetrics:
    """Per-version requests, errors, latency percentiles, scores, variants and live quality over a window."""
    return await queries.model_metrics(store, model, window_s=window_s, start=start, end=end, now=time.time(),
                                       retention_s=settings.bucket_ttl_s, feedback=labels,
                                       max_window_s=settings.query_window_max_s)


@stats.get("", operation_id="stats-get", response_model=ConsumerStats)
async def consumer_stats(consumer: ConsumerDep) -> ConsumerStats:
    """Progress of the stream consumer: events counted, rejected, pending and lag."""
    return await consumer.stats()


@models.get(
    "/{model}/drift",
    operation_id="models-drift",
    response_model=DriftReport,
    responses={404: _problem("No predictions of this model or version"), 422: _problem("Invalid window")},
)
async def model_drift(
    store: StoreDep,
    settings: SettingsDep,
    reporter: ReporterDep,
    model: ModelName,
    version: Annotated[int | None, Query(ge=1, description="Version (default: the newest one seen).")] = None,
    window: Annotated[Literal["count", "time"] | None, Query(description="Window kind (default: the setting).")] = None,
    size: Annotated[int | None, Query(ge=10, le=100_000, description="Instances of a count window.")] = None,
    window_s: Annotated[float | None, Query(gt=0, le=30 * 86400, description="Seconds of a time window.")] = None,
    history: Annotated[int, Query(ge=0, le=1000, description="Past windows to include, newest first.")] = 100,
) -> DriftReport:
    """Per-feature drift of a version's live window against its training reference, with history."""
    version = await queries.known_version(store, model, version)
    spec = WindowSpec(window or settings.drift_window, size or settings.drift_window_size,
                      window_s or settings.drift_window_s)
    report, _ = await reporter.report(model, version, spec, settings.drift_thresholds(model), history=history)
    return report


@models.get(
    "/{model}/series",
    operation_id="models-series",
    response_model=ModelSeries,
    responses={404: _problem("No events of this model"), 422: _problem("Invalid window or step")},
)
async def model_series(
    store: StoreDep,
    settings: SettingsDep,
    labels: FeedbackDep,
    model: ModelName,
    window_s: Annotated[float, Query(gt=0, description="The last N seconds.")] = 900,
    step_s: Annotated[int, Query(ge=10, description="Seconds per point, a multiple of 10.")] = 30,
) -> ModelSeries:
    """Request rate, error rate, latency percentiles and live accuracy over time, per version."""
    return await queries.model_series(store, labels, model, window_s=window_s, step_s=step_s, now=time.time(),
                                      retention_s=settings.bucket_ttl_s, max_window_s=settings.query_window_max_s)


@models.get(
    "/{model}/traffic",
    operation_id="models-traffic",
    responses={404: _problem("The registry does not know this model"), 503: _problem("The registry is unreachable")},
)
async def model_traffic(registry: RegistryDep, model: ModelName) -> dict[str, Any]:
    """The model's traffic split as the registry reports it (for the dashboard)."""
    try:
        split = await registry.traffic(model)
    except RegistryUnavailable as exc:
        raise BackendUnavailable(str(exc)) from None
    if split is None:
        raise ModelNotFound(f"the registry does not know model {model!r}", model=model)
    return split


@feedback.post(
    "",
    operation_id="feedback-submit",
    response_model=FeedbackReport,
    responses={401: _problem("No valid API key"), 403: _problem("The key's role is below deployer"),
               413: _problem("Too many labels in one request"), 422: _problem("Invalid feedback"),
               503: _problem("Redis, or the registry that checks keys, is not reachable")},
)
async def submit_feedback(
    _caller: FeedbackCallerDep,
    labels: FeedbackDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    body: Annotated[FeedbackItem | FeedbackBatch | list[FeedbackItem], Body(
        description="One `{request_id, label}`, a list of them, or `{\"items\": [...]}`.")],
) -> FeedbackReport:
    """Ground truth for logged predictions; each item says whether it was accepted, a duplicate, late or unknown.
    Needs `Authorization: Bearer <key>` of a deployer (or admin)."""
    items = [body] if isinstance(body, FeedbackItem) else body.items if isinstance(body, FeedbackBatch) else body
    if len(items) > settings.feedback_max_batch:
        raise PayloadTooLarge(f"at most {settings.feedback_max_batch} labels per request", limit=settings.feedback_max_batch)
    if not items:
        return FeedbackReport(counts={}, results=[])
    report = await labels.submit(items, now=time.time())
    for outcome, count in report.counts.items():
        metrics.feedback.labels(outcome=outcome).inc(count)
    return report


@alerts.get("", operation_id="alerts-list", response_model=AlertList)
async def list_alerts(
    center: AlertsDep,
    model: Annotated[str | None, Query(pattern=MODEL_NAME_PATTERN)] = None,
    rule: Annotated[Literal["drift", "accuracy", "error_rate", "latency"] | None, Query()] = None,
    active: Annotated[bool, Query(description="Only the incidents firing now, each as it began (not yet resolved), "
                                              "instead of the history.")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertList:
    """Alerts fired and resolved, newest first (deduplicated ones are not repeated); with `active`, what fires now."""
    read = center.active if active else center.history
    data = await read(model=model, rule=rule, limit=limit)
    return AlertList(data=data, count=len(data))


@dashboard.get("/dashboard", operation_id="dashboard-page", response_class=HTMLResponse)
async def dashboard_page() -> HTMLResponse:
    """The live dashboard: versions, traffic split, rates, latency, accuracy and drift, refreshed by polling."""
    return HTMLResponse((STATIC_DIR / "dashboard.html").read_text())
