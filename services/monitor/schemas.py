"""The monitor's API shapes. ``ModelMetrics`` is what a rollout controller consumes."""

from __future__ import annotations

from pydantic import BaseModel, Field


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
