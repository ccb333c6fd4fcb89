"""Request and response bodies of the gateway's own API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.common.schemas import RoutingTable, Variant


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[dict[str, Any]] = Field(
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
