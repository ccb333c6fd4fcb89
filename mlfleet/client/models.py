"""Typed shapes of the fleet's public API, as the client sends and receives them.

These mirror the services' OpenAPI schemas field for field (``tests/client`` compares them
with each running service's ``/openapi.json``), but are defined here rather than imported
from ``services``: the client is the public contract a user's code depends on, and it
talks to the fleet over HTTP only. Responses keep fields this client does not know yet
(``extra="allow"``), so an older client neither fails on a newer fleet nor drops data
when it prints an answer as JSON.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiModel(BaseModel):
    """A response body: unknown fields are kept, never an error."""

    model_config = ConfigDict(extra="allow")


class RequestModel(BaseModel):
    """A request body: a misspelt field is a local error, not a server round trip."""

    model_config = ConfigDict(extra="forbid")


# --- signatures ---------------------------------------------------------------------------------

class SignatureInput(ApiModel):
    """One column of the model's input tensor, in order."""

    name: str
    source: Literal["request", "feast"] = "request"
    feature: str | None = Field(default=None, description="For `feast` inputs: `feature_view:field`.")
    dtype: Literal["FP32"] = "FP32"
    default: float | None = None


class SignatureOutput(ApiModel):
    probabilities: str = "probabilities"
    label: str = "label"
    classes: list[int | str] = Field(default_factory=lambda: [0, 1])
    positive_class_index: int = 1


class Signature(ApiModel):
    """What a version expects and returns; inputs in tensor order."""

    inputs: list[SignatureInput] = Field(min_length=1)
    entities: list[str] = Field(default_factory=list)
    output: SignatureOutput = Field(default_factory=SignatureOutput)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]


# --- registry: models and versions --------------------------------------------------------------

class Gates(ApiModel):
    min_auc: float | None = 0.90
    min_accuracy: float | None = 0.85


class ModelCreate(RequestModel):
    name: str
    description: str = ""
    gates: Gates = Field(default_factory=Gates)


class ModelUpdate(RequestModel):
    description: str | None = None
    gates: Gates | None = None


class ModelPublic(ApiModel):
    name: str
    description: str
    gates: Gates
    created_at: datetime


class ModelList(ApiModel):
    data: list[ModelPublic]
    count: int


class Lineage(ApiModel):
    dataset_hash: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    code_revision: str | None = None


class FaultInjection(ApiModel):
    """Faults Triton injects into a version, to rehearse rollouts; real models leave the defaults."""

    delay_ms: int = 0
    fail_inference: bool = False


class VersionCreate(RequestModel):
    """The `metadata` part of a version upload."""

    signature: Signature
    reference_profile: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: Lineage = Field(default_factory=Lineage)
    description: str = ""
    fault_injection: FaultInjection | None = None


class VersionSummary(ApiModel):
    """A version as lists show it: everything but its reference profile."""

    model: str
    version: int
    sha256: str
    size_bytes: int
    status: str
    signature: Signature
    metrics: dict[str, float]
    lineage: Lineage
    fault_injection: FaultInjection = Field(default_factory=FaultInjection)
    description: str
    created_at: datetime


class VersionPublic(VersionSummary):
    reference_profile: dict[str, Any]


class VersionList(ApiModel):
    data: list[VersionSummary]
    count: int


# --- registry: traffic, rollouts, audit ---------------------------------------------------------

class TrafficUpdate(RequestModel):
    stable: int
    canary: int | None = None
    canary_percent: float = 0.0
    shadow: int | None = None


class TrafficPublic(ApiModel):
    model: str
    stable: int | None
    canary: int | None
    canary_percent: float
    shadow: int | None
    revision: int
    updated_at: datetime | None


class RolloutState(StrEnum):
    running = "running"
    paused = "paused"
    awaiting_approval = "awaiting_approval"
    promoted = "promoted"
    rolled_back = "rolled_back"
    aborted = "aborted"

    @property
    def finished(self) -> bool:
        return self in (RolloutState.promoted, RolloutState.rolled_back, RolloutState.aborted)


class RolloutChecks(ApiModel):
    """What the canary must show against stable over each interval; unset fields keep the registry's defaults."""

    max_error_rate_increase: float | None = None
    max_p99_latency_ratio: float | None = None
    latency_tolerance_ms: float | None = None
    min_accuracy_delta: float | None = None
    latency_test_alpha: float | None = None
    rate_test_alpha: float | None = None


class RolloutCreate(RequestModel):
    """A canary rollout; unset fields keep the registry's defaults (steps 10/25/50/75/100 %, 60 s intervals)."""

    candidate: int
    steps: list[float] | None = None
    interval_s: float | None = None
    min_requests: int | None = None
    checks: RolloutChecks | None = None
    max_failures: int | None = None
    require_approval: bool | None = None
    progress_deadline_s: float | None = None


class RolloutStepPublic(ApiModel):
    """One judgement of the canary: when, at what share, the verdict and why."""

    at: datetime
    canary_percent: float
    verdict: str = Field(description="`advance`, `hold`, `fail` or `promote`.")
    reasons: list[str]
    canary: dict[str, Any]
    stable: dict[str, Any]


class RolloutPublic(ApiModel):
    id: int
    model: str
    candidate: int
    baseline: int
    state: RolloutState
    step_index: int
    canary_percent: float
    steps: list[float]
    interval_s: float
    min_requests: int
    checks: RolloutChecks
    max_failures: int
    failures: int
    require_approval: bool
    approved: bool
    progress_deadline_s: float | None = None
    reason: str
    history: list[RolloutStepPublic]
    created_by: str
    created_at: datetime
    updated_at: datetime


class RolloutList(ApiModel):
    data: list[RolloutPublic]
    count: int


class AuditPublic(ApiModel):
    id: int
    at: datetime
    actor: str
    action: str
    model: str | None
    version: int | None
    detail: dict[str, Any]


class AuditList(ApiModel):
    data: list[AuditPublic]
    count: int
    next_before_id: int | None = None


# --- registry: API keys -------------------------------------------------------------------------

class Role(StrEnum):
    viewer = "viewer"
    scientist = "scientist"
    deployer = "deployer"
    admin = "admin"


class Identity(ApiModel):
    name: str
    role: Role
    rate_limit_per_minute: int | None = Field(default=None, description="Absent: unlimited.")


class KeyCreate(RequestModel):
    name: str
    role: Role
    rate_limit_per_minute: int | None = Field(default=None, ge=1, le=1_000_000,
                                              description="Requests per minute per service replica; None: unlimited.")


class KeyPublic(ApiModel):
    id: int
    name: str
    role: Role
    prefix: str = Field(description="First characters of the key, to recognise it.")
    created_by: str
    created_at: datetime
    revoked_at: datetime | None
    rate_limit_per_minute: int | None = None


class KeyCreated(ApiModel):
    id: int
    name: str
    role: Role
    key: str = Field(description="The secret, shown this once.", repr=False)
    created_at: datetime
    rate_limit_per_minute: int | None = None


class KeyList(ApiModel):
    data: list[KeyPublic]
    count: int


# --- gateway ------------------------------------------------------------------------------------

class PredictRequest(RequestModel):
    instances: list[dict[str, Any]] = Field(min_length=1)
    routing_key: str | None = None


class Prediction(ApiModel):
    label: int | str
    score: float
    probabilities: list[float]


class PredictResponse(ApiModel):
    model: str
    version: int
    variant: str
    predictions: list[Prediction]
    request_id: str
    trace_id: str


class VersionRoute(ApiModel):
    version: int
    signature: Signature


class ModelRoute(ApiModel):
    model: str
    revision: int
    stable: int | None = None
    canary: int | None = None
    canary_percent: float = 0.0
    shadow: int | None = None
    versions: list[VersionRoute] = Field(default_factory=list)


class RoutingTable(ApiModel):
    revision: int
    models: list[ModelRoute] = Field(default_factory=list)


class RoutesPublic(ApiModel):
    """The routing table a gateway serves from."""

    revision: int
    loaded_at: float | None
    table: RoutingTable

    def serves(self, model: str, revision: int) -> bool:
        return any(m.model == model and m.revision >= revision for m in self.table.models)


# --- monitor ------------------------------------------------------------------------------------

class Window(ApiModel):
    start: float
    end: float
    bucket_s: int


class LatencySummary(ApiModel):
    p50: float
    p95: float
    p99: float
    mean: float


class LatencyHistogram(ApiModel):
    edges: list[float]
    counts: list[int]


class ScoreHistogram(ApiModel):
    edges: list[float]
    counts: list[int]


class Quality(ApiModel):
    """Live quality from ground-truth feedback in the window (positive class 1)."""

    labelled: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    roc_auc: float | None


class VersionMetrics(ApiModel):
    version: int | None
    requests: int
    predictions: int
    errors: int
    error_rate: float
    errors_by_code: dict[str, int]
    latency_ms: LatencySummary | None
    latency_histogram: LatencyHistogram
    score_histogram: ScoreHistogram
    variants: dict[str, int]
    quality: Quality | None = None


class ModelMetrics(ApiModel):
    model: str
    window: Window
    versions: list[VersionMetrics]


class FeedbackItem(RequestModel):
    request_id: str
    label: int = Field(description="Ground truth: 1 for the positive class (e.g. fraud), else 0.")
    instance: int = Field(default=0, description="Which instance of a multi-instance request.")
    model: str | None = Field(default=None, description="The model the prediction came from (needed when one request "
                                                        "id was sent to several models).")


class FeedbackResult(ApiModel):
    request_id: str
    instance: int
    outcome: str = Field(description="`accepted`, `duplicate`, `late`, `pending` (still so after the client's "
                                     "retries), `unknown` or `invalid`.")
    versions: list[int]


class FeedbackReport(ApiModel):
    counts: dict[str, int]
    results: list[FeedbackResult]


class DriftThresholds(ApiModel):
    ks: float
    psi: float
    js: float
    alpha: float
    min_samples: int


class LiveWindowInfo(ApiModel):
    kind: str
    size: int | None
    window_s: float | None
    n: int
    start: float | None
    end: float | None
    last_request_id: str | None


class DriftHistogram(ApiModel):
    bin_edges: list[float] | None = None
    categories: list[float] | None = None
    reference: list[float]
    live: list[float]


class FeatureDrift(ApiModel):
    feature: str
    kind: str
    n: int
    ks: float | None = None
    chi2: float | None = None
    js: float | None = None
    psi: float
    p_value: float
    significant: bool = False
    action: str = Field(default="none", description="`none`, `retrain` or `rollback`.")
    histogram: DriftHistogram


class Example(ApiModel):
    request_id: str
    trace_id: str | None
    feature: str
    value: float


class DriftPoint(ApiModel):
    at: float
    window: LiveWindowInfo
    verdict: str
    score: float
    drifted_features: list[str]
    statistics: dict[str, dict[str, float | None]]
    examples: list[Example]


class DriftReport(ApiModel):
    """A version's live inputs compared with its training reference profile."""

    model: str
    version: int
    evaluated_at: float
    window: LiveWindowInfo
    thresholds: DriftThresholds
    corrected_alpha: float
    verdict: str = Field(description="`ok`, `retrain`, `rollback`, `insufficient_data` or `no_reference`.")
    drifted_features: list[str]
    features: list[FeatureDrift]
    scores: FeatureDrift | None
    examples: list[Example]
    worst_window: DriftPoint | None
    history: list[DriftPoint]


class AlertPublic(ApiModel):
    id: str
    fingerprint: str
    rule: str = Field(description="`drift`, `accuracy`, `error_rate` or `latency`.")
    severity: str = Field(description="`critical` or `warning`.")
    action: str | None = None
    model: str
    version: int | None
    summary: str
    description: str
    values: dict[str, float] = Field(default_factory=dict)
    features: list[str] = Field(default_factory=list)
    window_start: float | None = None
    window_end: float | None = None
    fired_at: float
    status: str = Field(default="firing", description="`firing` or `resolved`.")
    started_at: float | None = None
    resolved_at: float | None = None


class AlertList(ApiModel):
    data: list[AlertPublic]
    count: int


# --- features -----------------------------------------------------------------------------------

class FieldPublic(ApiModel):
    name: str
    dtype: str


class FeatureViewPublic(ApiModel):
    name: str
    entities: list[str]
    join_keys: list[FieldPublic]
    fields: list[FieldPublic]
    ttl_seconds: float | None
    push_source: str | None
    offline_path: str | None


class FeatureViewList(ApiModel):
    data: list[FeatureViewPublic]
    count: int
