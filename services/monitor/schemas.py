"""The monitor's API shapes. ``ModelMetrics`` is what a rollout controller consumes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.request_ids import MAX_REQUEST_ID_LENGTH
from services.common.schemas import MODEL_NAME_PATTERN
from services.monitor.drift import DriftThresholds, FeatureDrift, Verdict


class Window(BaseModel):
    """The span actually summed: the query's bounds widened to whole buckets, ``[start, end)``."""

    start: float = Field(description="Unix seconds, inclusive.")
    end: float = Field(description="Unix seconds, exclusive.")
    bucket_s: int = Field(description="Width of one aggregate bucket in seconds.")


class LatencySummary(BaseModel):
    """Request latency in ms; percentiles interpolated within fixed log-spaced histogram buckets."""

    p50: float
    p95: float
    p99: float
    mean: float


class LatencyHistogram(BaseModel):
    """Request latency in ms: ``counts[i]`` lies in ``[edges[i], edges[i+1])``; the last bucket is open above.

    Enough to compare two versions' latency distributions (e.g. Mann–Whitney U on bucket ranks).
    """

    edges: list[float]
    counts: list[int]


class ScoreHistogram(BaseModel):
    """Positive-class scores in equal bins over [0, 1]: ``counts[i]`` lies in ``[edges[i], edges[i+1])``."""

    edges: list[float]
    counts: list[int]


class Quality(BaseModel):
    """Live model quality from ground-truth feedback that arrived in the window (positive class 1)."""

    labelled: int = Field(description="Predictions joined with a label.")
    accuracy: float
    precision: float = Field(description="0 when nothing was predicted positive.")
    recall: float = Field(description="0 when no label was positive.")
    f1: float
    roc_auc: float | None = Field(description="null while the labels hold a single class.")


class VersionMetrics(BaseModel):
    version: int | None = Field(description="Model version; null for requests that failed before a version was chosen.")
    requests: int = Field(description="Prediction requests (one event each), successful or not.")
    predictions: int = Field(description="Instances predicted by successful requests.")
    errors: int = Field(description="Requests that failed.")
    error_rate: float = Field(description="errors / requests; 0 when there were no requests.")
    errors_by_code: dict[str, int] = Field(description="Failed requests per error code.")
    latency_ms: LatencySummary | None = Field(description="Latency of all requests; null when there were none.")
    latency_histogram: LatencyHistogram
    score_histogram: ScoreHistogram
    variants: dict[str, int] = Field(description="Requests per routing variant (stable, canary, shadow, pinned).")
    quality: Quality | None = Field(default=None, description="null when no feedback arrived in the window.")


class ModelMetrics(BaseModel):
    model: str
    window: Window
    versions: list[VersionMetrics]


class ModelSummary(BaseModel):
    model: str
    versions: list[int | None]


class ModelList(BaseModel):
    data: list[ModelSummary]
    count: int


class ConsumerStats(BaseModel):
    stream: str
    group: str
    consumer: str
    events_processed: int = Field(description="Events counted by the whole group since it was created.")
    events_invalid: int = Field(description="Entries the group acknowledged without counting (unparseable or invalid).")
    processed_by_this_consumer: int = Field(description="Events this process counted since it started.")
    pending: int = Field(description="Entries delivered to a consumer of the group and not yet acknowledged.")
    stream_length: int
    lag_s: float = Field(
        description="Seconds between the newest entry of the stream and the last one delivered to the group."
    )
    processing_lag_s: float | None = Field(
        description="Seconds between the newest entry of this process's last batch being added and being counted."
    )
    consumers: int = Field(description="Consumers registered in the group.")


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=MAX_REQUEST_ID_LENGTH, description="`request_id` of the prediction.")
    label: Literal[0, 1] = Field(description="Ground truth: 1 for the positive class (e.g. fraud).")
    instance: int = Field(default=0, ge=0, le=1_000_000, description="Which instance of a multi-instance request.")
    model: str | None = Field(
        default=None, pattern=MODEL_NAME_PATTERN,
        description="The model the prediction came from. Needed when one request id was sent to several models: "
                    "without it the label is joined with the prediction of each of them.",
    )


class FeedbackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[FeedbackItem] = Field(min_length=1)


FeedbackOutcome = Literal["accepted", "duplicate", "late", "pending", "unknown", "invalid"]


class FeedbackResult(BaseModel):
    request_id: str
    instance: int
    outcome: FeedbackOutcome = Field(
        description="`accepted`; `duplicate` (already labelled); `late` (the prediction expired; for a UUIDv7 "
                    "request id, one made longer ago than the prediction is kept); `pending` (a UUIDv7 request id "
                    "made less than 30 s ago whose prediction has not reached the monitor yet: send the label again "
                    "in a moment; the Python client does); `unknown` (never predicted, or forgotten); `invalid` (no "
                    "such instance)."
    )
    versions: list[int] = Field(default_factory=list, description="Versions whose prediction the label joined.")


class FeedbackReport(BaseModel):
    counts: dict[str, int] = Field(description="Items per outcome.")
    results: list[FeedbackResult]


class LiveWindowInfo(BaseModel):
    """The live instances a drift report compared: the newest sampled ones (the monitor's `samples_per_s`)."""

    kind: Literal["count", "time"]
    size: int | None = Field(description="Instances asked for (count windows).")
    window_s: float | None = Field(description="Seconds covered (time windows).")
    n: int = Field(description="Instances in the window.")
    start: float | None = Field(description="Unix time of the oldest instance.")
    end: float | None = Field(description="Unix time of the newest instance.")
    last_request_id: str | None = Field(description="Request of the newest instance: the window's identity.")


class Example(BaseModel):
    request_id: str
    trace_id: str | None
    feature: str = Field(description="The feature the example illustrates (the window's worst).")
    value: float


class DriftPoint(BaseModel):
    """One evaluated window, as kept in the drift history."""

    at: float = Field(description="Unix time of the evaluation.")
    window: LiveWindowInfo
    verdict: Verdict
    score: float = Field(description="Largest KS / JS distance of any input feature.")
    drifted_features: list[str]
    statistics: dict[str, dict[str, float | None]] = Field(
        description="Per feature (and `__score__`): ks, js, psi, p_value."
    )
    examples: list[Example]


class DriftReport(BaseModel):
    model: str
    version: int
    evaluated_at: float
    window: LiveWindowInfo
    thresholds: DriftThresholds
    corrected_alpha: float = Field(description="Per-test significance level after the Bonferroni correction.")
    verdict: Verdict
    drifted_features: list[str]
    features: list[FeatureDrift]
    scores: FeatureDrift | None = Field(description="Drift of the prediction scores.")
    examples: list[Example] = Field(description="Requests of this window where the worst feature moved most.")
    worst_window: DriftPoint | None = Field(description="The most drifted window of the history, with its examples.")
    history: list[DriftPoint] = Field(description="Evaluated windows, newest first.")


class AlertPublic(BaseModel):
    id: str
    fingerprint: str = Field(description="Rule, model, version and action: alerts sharing it are deduplicated.")
    rule: Literal["drift", "accuracy", "error_rate", "latency"]
    severity: Literal["critical", "warning"]
    action: Literal["retrain", "rollback"] | None = None
    model: str
    version: int | None
    summary: str
    description: str
    values: dict[str, float] = Field(default_factory=dict, description="The measurements that broke the rule.")
    features: list[str] = Field(default_factory=list, description="Drifted features (drift alerts).")
    window_start: float | None = None
    window_end: float | None = None
    fired_at: float = Field(description="When this alert fired (for a resolution: when the resolved one fired).")
    status: Literal["firing", "resolved"] = Field(
        default="firing", description="`resolved`: a later check found the rule no longer broken."
    )
    started_at: float | None = Field(
        default=None, description="When the incident began: the first alert of its fingerprint since it was last resolved."
    )
    resolved_at: float | None = Field(default=None, description="When the incident was resolved.")


class AlertList(BaseModel):
    data: list[AlertPublic]
    count: int


class SeriesPoint(BaseModel):
    t: float = Field(description="Start of the step, unix seconds.")
    requests: int
    request_rate: float = Field(description="Requests per second over the step.")
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    accuracy: float | None
    labelled: int


class VersionSeries(BaseModel):
    version: int | None
    points: list[SeriesPoint]


class ModelSeries(BaseModel):
    model: str
    step_s: int
    window: Window
    versions: list[VersionSeries]
