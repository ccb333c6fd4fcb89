"""Request and response bodies of the registry's HTTP API."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.auth import Role
from services.common.schemas import MODEL_NAME_PATTERN, Signature

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
VersionNumber = Annotated[int, Field(ge=1, le=2**31 - 1)]
RateLimit = Annotated[int, Field(ge=1, le=1_000_000)]


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of the fleet is reported."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    reasons: list[str] | None = Field(default=None, description="Why a version was rejected (`version-rejected`).")
    errors: list[dict[str, Any]] | None = Field(default=None, description="Field errors (`invalid-input`).")
    retry_after_s: int | None = Field(default=None, description="Seconds to wait before retrying (`rate-limited`).")


class Gates(BaseModel):
    """Validation gates a version's reported metrics must pass; `null` switches a gate off."""

    model_config = ConfigDict(extra="forbid")

    min_auc: float | None = Field(default=0.90, ge=0.0, le=1.0, description="Lowest acceptable metric `auc`.")
    min_accuracy: float | None = Field(default=0.85, ge=0.0, le=1.0, description="Lowest acceptable metric `accuracy`.")


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=MODEL_NAME_PATTERN, description="Unique name; also the model's name on Triton.")
    description: str = Field(default="", max_length=4000)
    gates: Gates = Field(default_factory=Gates)


class ModelUpdate(BaseModel):
    """What an admin may change of a model; a field left out is kept."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, max_length=4000)
    gates: Gates | None = Field(default=None, description="The validation gates of versions registered from now on "
                                                          "(registered versions keep their status); a gate left "
                                                          "out keeps its value, `null` switches it off.")

    @model_validator(mode="after")
    def _changes_something(self) -> ModelUpdate:
        if self.description is None and (self.gates is None or not self.gates.model_fields_set):
            raise ValueError("nothing to change: give a description or a gate")
        return self


class ModelPublic(BaseModel):
    name: str
    description: str
    gates: Gates
    created_at: datetime


class ModelList(BaseModel):
    data: list[ModelPublic]
    count: int


class Lineage(BaseModel):
    """Where a version came from."""

    dataset_hash: str | None = Field(default=None, max_length=256)
    params: dict[str, Any] = Field(default_factory=dict, description="Training parameters.")
    code_revision: str | None = Field(default=None, max_length=256)


class FaultInjection(BaseModel):
    """Faults Triton injects into a version, to rehearse rollouts and rollbacks (a slow or failing candidate).

    Real models leave both at their defaults.
    """

    model_config = ConfigDict(extra="forbid")

    delay_ms: int = Field(default=0, ge=0, le=10_000, description="Added to every inference batch of this version.")
    fail_inference: bool = Field(default=False, description="Every inference of this version fails.")

    @property
    def active(self) -> bool:
        return self.delay_ms > 0 or self.fail_inference


class VersionCreate(BaseModel):
    """The `metadata` part of a version upload (a JSON string beside the `artifact` part)."""

    signature: Signature
    reference_profile: dict[str, Any] = Field(default_factory=dict, description="Training distribution, for drift checks.")
    metrics: dict[str, FiniteFloat] = Field(default_factory=dict, max_length=256, description="Holdout metrics, e.g. `auc`, `accuracy`.")
    lineage: Lineage = Field(default_factory=Lineage)
    description: str = Field(default="", max_length=4000)
    fault_injection: FaultInjection = Field(default_factory=FaultInjection)

    @model_validator(mode="after")
    def _positive_class_is_a_class(self) -> VersionCreate:
        """Checked on registration only: a signature stored by an earlier release, read back, must still load."""
        output = self.signature.output
        if output.positive_class_index >= len(output.classes):
            raise ValueError(f"signature.output.positive_class_index {output.positive_class_index} names no class: "
                             f"there are {len(output.classes)} (indices 0 to {len(output.classes) - 1})")
        return self


class VersionStatus(StrEnum):
    registered = "registered"
    failed = "failed"
    """Rolled back by the rollout controller."""


class VersionSummary(BaseModel):
    """A version as lists show it: everything but its reference profile (up to megabytes each)."""

    model: str
    version: int
    sha256: str = Field(description="sha256 of the ONNX artifact, hex.")
    size_bytes: int
    status: VersionStatus
    signature: Signature
    metrics: dict[str, float]
    lineage: Lineage
    fault_injection: FaultInjection
    description: str
    created_at: datetime


class VersionPublic(VersionSummary):
    """A version, with the reference profile the monitor judges drift against."""

    reference_profile: dict[str, Any]


class VersionList(BaseModel):
    data: list[VersionSummary] = Field(description="Oldest first, without reference profiles (`GET .../versions/{n}` "
                                                   "has a version's).")
    count: int


class TrafficUpdate(BaseModel):
    """The desired traffic split of a model."""

    model_config = ConfigDict(extra="forbid")

    stable: VersionNumber = Field(description="Version serving the traffic the canary does not take.")
    canary: VersionNumber | None = Field(default=None, description="Version taking `canary_percent` of the traffic.")
    canary_percent: float = Field(default=0.0, ge=0.0, le=100.0, description="Share of traffic on the canary, two decimals at most.")
    shadow: VersionNumber | None = Field(default=None, description="Version mirrored every request, its answers discarded.")

    @model_validator(mode="after")
    def _consistent(self) -> TrafficUpdate:
        if not math.isclose(self.canary_percent * 100, round(self.canary_percent * 100), abs_tol=1e-6):
            raise ValueError("canary_percent has at most two decimals")
        self.canary_percent = round(self.canary_percent, 2)
        if self.canary is None and self.canary_percent > 0:
            raise ValueError("canary_percent > 0 needs a canary version")
        if self.canary is not None and self.canary == self.stable:
            raise ValueError("canary must differ from stable")
        if self.shadow is not None and self.shadow == self.stable:
            raise ValueError("shadow must differ from stable")
        return self

    @property
    def versions(self) -> set[int]:
        return {v for v in (self.stable, self.canary, self.shadow) if v is not None}


class TrafficPublic(BaseModel):
    model: str
    stable: int | None = Field(description="`null` until traffic is first set.")
    canary: int | None
    canary_percent: float
    shadow: int | None
    revision: int = Field(description="Fleet-wide policy revision of this model's last change; 0 before any.")
    updated_at: datetime | None


class AuditPublic(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str = Field(description="e.g. `model.create`, `version.register`, `traffic.set`, `rollout.start`, `key.create`.")
    model: str | None
    version: int | None
    detail: dict[str, Any]


class AuditList(BaseModel):
    data: list[AuditPublic]
    count: int
    next_before_id: int | None = Field(default=None, description="`before_id` of the next (older) page; `null` "
                                                                 "when this page is not full (the last; a full last "
                                                                 "page leads to one empty page more).")


class Reason(BaseModel):
    """Optional body of an admin action: why, for the audit log."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=1000)


# --- API keys -----------------------------------------------------------------------------------

SYSTEM_ACTORS = frozenset({"controller", "reconciler", "registry"})
"""The names the registry itself writes audit events under (the rollout controller, the reconcile loop, the bootstrap):
a key named so would make a person's actions read as the registry's (and a manual rollback count as automatic)."""


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$",
                      description="Who holds the key; writes made with it are audited under this name. Not "
                                  "`controller`, `reconciler` or `registry`, which the registry's own writes use.")
    role: Role
    rate_limit_per_minute: RateLimit | None = Field(
        default=None, description="Requests per minute the key may make to each service replica (429 with "
                                  "`Retry-After` above); `null`: unlimited.")

    @model_validator(mode="after")
    def _not_a_system_actor(self) -> KeyCreate:
        if self.name.lower() in SYSTEM_ACTORS:
            raise ValueError(f"{self.name!r} is a name the registry's own writes are audited under")
        return self


class KeyPublic(BaseModel):
    id: int
    name: str
    role: Role
    prefix: str = Field(description="First characters of the key, to recognise it.")
    created_by: str
    created_at: datetime
    revoked_at: datetime | None
    rate_limit_per_minute: int | None = Field(default=None, description="`null`: unlimited.")


class KeyCreated(BaseModel):
    """The new key; `key` is shown this once and never stored in the clear."""

    id: int
    name: str
    role: Role
    key: str
    created_at: datetime
    rate_limit_per_minute: int | None = Field(default=None, description="`null`: unlimited.")


class KeyList(BaseModel):
    data: list[KeyPublic]
    count: int


# --- Rollouts -----------------------------------------------------------------------------------

class RolloutState(StrEnum):
    running = "running"
    paused = "paused"
    awaiting_approval = "awaiting_approval"
    promoted = "promoted"
    rolled_back = "rolled_back"
    aborted = "aborted"

    @property
    def active(self) -> bool:
        return self in ACTIVE_ROLLOUT_STATES


ACTIVE_ROLLOUT_STATES = frozenset({RolloutState.running, RolloutState.paused, RolloutState.awaiting_approval})


class Verdict(StrEnum):
    advance = "advance"
    hold = "hold"
    fail = "fail"
    promote = "promote"


class RolloutChecks(BaseModel):
    """What the canary must show against stable over each interval to go on."""

    model_config = ConfigDict(extra="forbid")

    max_error_rate_increase: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Canary error rate may exceed stable's by at most this (absolute).")
    max_p99_latency_ratio: float = Field(
        default=1.10, ge=1.0, le=100.0, description="Canary p99 latency may be at most this multiple of stable's.")
    latency_tolerance_ms: float = Field(
        default=2.0, ge=0.0, le=60_000,
        description="A canary p99 at most this many ms above stable's never fails latency: on fast models a ratio "
                    "alone would flag sub-millisecond jitter (a quiet canary's colder caches) as a regression.")
    min_accuracy_delta: float = Field(
        default=0.0, ge=-1.0, le=1.0,
        description="Canary accuracy minus stable's must be at least this, when the monitor has labelled feedback.")
    latency_test_alpha: float = Field(
        default=0.05, gt=0.0, lt=1.0,
        description="Significance of the one-sided Mann–Whitney U test that the canary is slower; latency fails "
                    "only when this test and the p99 ratio agree.")
    rate_test_alpha: float = Field(
        default=0.05, gt=0.0, lt=1.0,
        description="Significance of the one-sided Fisher exact tests that the canary errs more often than stable, "
                    "or is right less often on labelled feedback; the error rate (or accuracy) fails only when its "
                    "test and its threshold agree, so a canary as good as stable is not failed by chance.")


DEFAULT_PROGRESS_DEADLINE_S = 3600.0


class RolloutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    candidate: VersionNumber = Field(description="Version rolled out as the canary; the current stable is the baseline.")
    steps: list[float] = Field(
        default_factory=lambda: [10.0, 25.0, 50.0, 75.0, 100.0], min_length=1, max_length=100,
        description="Canary percentages, increasing; passing the last step below 100 promotes the candidate.")
    interval_s: float = Field(default=60.0, gt=0, le=86_400, description="Seconds of traffic judged per verdict.")
    min_requests: int = Field(default=100, ge=1, le=1_000_000_000, description="Canary requests an interval needs for a verdict; fewer holds.")
    checks: RolloutChecks = Field(default_factory=RolloutChecks)
    max_failures: int = Field(default=1, ge=1, le=100, description="Failed verdicts after which the rollout rolls back.")
    require_approval: bool = Field(default=False, description="Wait for `approve` before the final step (promotion).")
    progress_deadline_s: float | None = Field(
        default=None, gt=0, le=2_592_000,
        description="A step that holds without a verdict (too few canary requests, or no numbers from the monitor) "
                    "for longer than this aborts the rollout: traffic goes back to stable, and the candidate is not "
                    "marked failed. More than `interval_s`; unset: 3600 s or ten intervals, whichever is longer.")

    @model_validator(mode="after")
    def _valid_steps(self) -> RolloutCreate:
        for step in self.steps:
            if not 0 < step <= 100:
                raise ValueError("every step is a percentage in (0, 100]")
            if not math.isclose(step * 100, round(step * 100), abs_tol=1e-6):
                raise ValueError("steps have at most two decimals")
        self.steps = [round(s, 2) for s in self.steps]
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError("steps must increase")
        if self.steps[0] >= 100:
            raise ValueError("at least one step must be below 100")
        if self.progress_deadline_s is None:
            self.progress_deadline_s = max(DEFAULT_PROGRESS_DEADLINE_S, 10 * self.interval_s)
        elif self.progress_deadline_s <= self.interval_s:
            raise ValueError("progress_deadline_s must exceed interval_s: a step is judged once its interval is over")
        return self


class RolloutStepPublic(BaseModel):
    at: datetime
    canary_percent: float = Field(description="The share the canary had during the judged interval.")
    verdict: Verdict
    reasons: list[str]
    canary: dict[str, Any] = Field(description="The canary's numbers over the interval (requests, error_rate, p99, …).")
    stable: dict[str, Any] = Field(description="Stable's numbers over the same interval.")


class RolloutPublic(BaseModel):
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
    progress_deadline_s: float | None = Field(
        description="null for a rollout started before the registry had deadlines: it holds for as long as it takes.")
    reason: str
    history: list[RolloutStepPublic]
    created_by: str
    created_at: datetime
    updated_at: datetime


class RolloutList(BaseModel):
    data: list[RolloutPublic]
    count: int = Field(description="Rollouts in `data`: at most the request's `limit`, newest first.")
