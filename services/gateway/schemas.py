"""Request and response bodies of the gateway's own API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.common.schemas import RoutingTable, Variant, int64_values

FLOAT32_MAX = 3.4028234663852886e38
"""Input tensors are FP32: a larger number would reach the model as infinity."""


def _representable(instance: dict[str, Any]) -> dict[str, Any]:
    """Refuse numbers no entity key (Int64) or input tensor (FP32) can hold, before they reach the feature store."""
    int64_values(instance)
    for name, value in instance.items():
        if type(value) is float and abs(value) > FLOAT32_MAX:
            raise ValueError(f"{name!r} is beyond the range of a 32-bit float")
    return instance


Instance = Annotated[dict[str, Any], AfterValidator(_representable)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[Instance] = Field(
        min_length=1,
        description="Rows to score: request fields and entity keys (e.g. `user_id`); "
        "at most `max_instances` (setting) per request.",
        examples=[[{"user_id": 42, "amount": 120.5}]],
    )
    routing_key: str | None = Field(
        default=None, max_length=256,
        description="Key that pins this caller to one variant; defaults to the first instance's first entity key.",
    )


class Prediction(BaseModel):
    label: int | str = Field(description="The most probable class.")
    score: float = Field(description="Probability of the positive class.")
    probabilities: list[float] = Field(description="Probability of each class, in the signature's class order.")


class PredictResponse(BaseModel):
    model: str
    version: int = Field(description="Model version that answered.")
    variant: Variant = Field(description="Why that version answered: stable, canary or pinned.")
    predictions: list[Prediction]
    request_id: str
    trace_id: str


class RoutesPublic(BaseModel):
    """The routing table this gateway serves from, as last loaded from the registry."""

    revision: int
    loaded_at: float | None = Field(description="Unix seconds of the last successful load; null before the first.")
    table: RoutingTable
