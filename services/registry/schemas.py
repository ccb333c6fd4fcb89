"""Request and response bodies of the registry's HTTP API."""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.schemas import MODEL_NAME_PATTERN, Signature

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
VersionNumber = Annotated[int, Field(ge=1, le=2**31 - 1)]


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


class VersionCreate(BaseModel):
    """The `metadata` part of a version upload (a JSON string beside the `artifact` part)."""

    signature: Signature
    reference_profile: dict[str, Any] = Field(default_factory=dict, description="Training distribution, for drift checks.")
    metrics: dict[str, FiniteFloat] = Field(default_factory=dict, description="Holdout metrics, e.g. `auc`, `accuracy`.")
    lineage: Lineage = Field(default_factory=Lineage)
    description: str = Field(default="", max_length=4000)


class VersionStatus(StrEnum):
    registered = "registered"


class VersionPublic(BaseModel):
    model: str
    version: int
    sha256: str = Field(description="sha256 of the ONNX artifact, hex.")
    size_bytes: int
    status: VersionStatus
    signature: Signature
    metrics: dict[str, float]
    lineage: Lineage
    reference_profile: dict[str, Any]
    description: str
    created_at: datetime


class VersionList(BaseModel):
    data: list[VersionPublic]
    count: int


class TrafficUpdate(BaseModel):
    """The desired traffic split of a model."""

    model_config = ConfigDict(extra="forbid")

    stable: VersionNumber = Field(description="Version serving the traffic the canary does not take.")
    canary: VersionNumber | None = Field(default=None, description="Version taking `canary_percent` of the traffic.")
    canary_percent: float = Field(default=0.0, ge=0.0, le=100.0, description="Share of traffic on the canary, two decimals at most.")
    shadow: VersionNumber | None = Field(default=None, description="Version mirrored every request, its answers discarded.")

    @model_validator(mode="after")
    def _consistent(self) -> "TrafficUpdate":
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
    action: str = Field(description="e.g. `model.create`, `version.register`, `version.reject`, `traffic.set`.")
    model: str | None
    version: int | None
    detail: dict[str, Any]


class AuditList(BaseModel):
    data: list[AuditPublic]
    count: int
