"""Schemas shared by more than one service: signatures, routing, prediction events.

These are the contracts between processes (HTTP bodies, Redis messages). A service
owns its other request/response models in its own ``schemas.py``.
"""

from __future__ import annotations

import functools
import math
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MODEL_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
MAX_NAME_LENGTH = 128
"""Longest column, output, class or entity name a signature may hold."""
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
"""An integer the stores can hold (Feast Int64, PostgreSQL BIGINT); a larger one is a 422, never a store error."""


def int64_values(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` when every integer in it is an :data:`Int64` (a validator of free-form rows and instances)."""
    for name, value in values.items():
        if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"{name!r} is an integer beyond 64 bits")
    return values


ClassLabel = Int64 | Annotated[str, Field(max_length=MAX_NAME_LENGTH)]


class InputSource(StrEnum):
    request = "request"
    feast = "feast"


class SignatureInput(BaseModel):
    """One column of the model's input tensor, in order."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="Column name; for `request` inputs, the instance field read.")
    source: InputSource = Field(description="`request`: read from the instance; `feast`: looked up in the online store.")
    feature: str | None = Field(
        default=None, max_length=256, description="For `feast` inputs: `feature_view:field`."
    )
    dtype: Literal["FP32"] = Field(default="FP32", description="Tensor element type.")
    default: float | None = Field(
        default=None, description="Value used when the feature is missing; without one a missing value is an error."
    )

    @model_validator(mode="after")
    def _feature_for_feast(self) -> SignatureInput:
        if self.source is InputSource.feast:
            if not self.feature or ":" not in self.feature:
                raise ValueError(f"input {self.name!r}: a feast input needs feature='view:field'")
        if self.default is not None and not math.isfinite(self.default):
            raise ValueError(f"input {self.name!r}: default must be finite")
        return self


class SignatureOutput(BaseModel):
    """How Triton's outputs become predictions."""

    model_config = ConfigDict(extra="forbid")

    probabilities: Name = Field(default="probabilities", description="Triton output holding class probabilities.")
    label: Name = Field(default="label", description="Triton output holding the predicted class.")
    classes: list[ClassLabel] = Field(default_factory=lambda: [0, 1], min_length=1, max_length=1024,
                                      description="Class of each probability column.")
    positive_class_index: int = Field(default=1, ge=0, le=1023, description="Column whose probability is the score.")


class Signature(BaseModel):
    """What a version expects and returns. Inputs are in tensor order."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[SignatureInput] = Field(min_length=1, max_length=1024)
    entities: list[Name] = Field(
        default_factory=list, max_length=32, description="Join keys read from each instance for feature lookups (e.g. `user_id`)."
    )
    output: SignatureOutput = Field(default_factory=SignatureOutput)

    @model_validator(mode="after")
    def _unique_names(self) -> Signature:
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError("signature input names must be unique")
        if any(i.source is InputSource.feast for i in self.inputs) and not self.entities:
            raise ValueError("a signature with feast inputs must name its entities")
        return self

    @functools.cached_property
    def feast_features(self) -> tuple[str, ...]:
        """The ``view:field`` of each feast input, in input order; worked out once per signature (the gateway asks
        for every request, and a signature is not changed once built)."""
        return tuple(i.feature for i in self.inputs if i.source is InputSource.feast and i.feature)


class Variant(StrEnum):
    stable = "stable"
    canary = "canary"
    shadow = "shadow"
    pinned = "pinned"


class VersionRoute(BaseModel):
    """What a gateway needs to serve one version."""

    version: int = Field(ge=1)
    signature: Signature


class ModelRoute(BaseModel):
    """Traffic policy of one model as gateways enforce it."""

    model: str
    revision: int = Field(ge=0, description="Increases with every policy change of this model.")
    stable: int | None = None
    canary: int | None = None
    canary_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    shadow: int | None = None
    versions: list[VersionRoute] = Field(default_factory=list, description="Every version the policy names.")

    def version_route(self, version: int) -> VersionRoute | None:
        return next((v for v in self.versions if v.version == version), None)


class RoutingTable(BaseModel):
    """All models' policies; ``revision`` is the fleet-wide policy revision."""

    revision: int = Field(ge=0)
    models: list[ModelRoute] = Field(default_factory=list)


class PolicyChanged(BaseModel):
    """Published on Redis pub/sub when a model's traffic policy changes."""

    model: str
    revision: int


class PredictionEvent(BaseModel):
    """One prediction request as logged to the events stream (one per request, N instances)."""

    request_id: str
    trace_id: str | None = None
    traceparent: str | None = Field(
        default=None, description="W3C trace context of the prediction's span, so the monitor's processing joins its trace."
    )
    model: str
    version: int | None = None
    variant: Variant | None = None
    timestamp: float = Field(description="Unix seconds when the request arrived.")
    latency_ms: float = Field(ge=0)
    status: Literal["ok", "error"] = "ok"
    error_code: str | None = None
    instances: int = Field(default=0, ge=0)
    features: list[list[float]] = Field(default_factory=list, description="Input vectors, signature order.")
    feature_names: list[str] = Field(default_factory=list)
    scores: list[float] = Field(default_factory=list, description="Positive-class probability per instance.")
    labels: list[Any] = Field(default_factory=list, description="Predicted class per instance.")
    positive_label: ClassLabel | None = Field(
        default=None, description="The model's positive class (its output's `positive_class_index`), whose probability "
                                  "`scores` are: an instance was predicted positive when its label is this one."
    )
