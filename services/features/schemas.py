"""Request and response bodies of the features API."""

from __future__ import annotations

from datetime import datetime, UTC
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from services.common.schemas import INT64_MAX, INT64_MIN, int64_values

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_MOMENT = datetime(2200, 1, 1, tzinfo=UTC)
"""Materialization bounds: Feast and its stores handle nothing outside them."""

MAX_ROWS = 10_000
"""Most entity rows one online lookup or push may carry."""
EntityValue = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)] | Annotated[StrictStr, Field(max_length=256)]
"""A join key value: Feast stores them as Int64 or String."""


class FieldPublic(BaseModel):
    name: str
    dtype: str = Field(description="Feast type, e.g. `Int64`, `Float64`.")


class FeatureViewPublic(BaseModel):
    name: str
    entities: list[str]
    join_keys: list[FieldPublic]
    fields: list[FieldPublic]
    ttl_seconds: float | None = Field(
        description="How long a value stays valid; null when unlimited."
    )
    push_source: str | None = Field(
        description="Name to push fresh values to (`POST /v1/push/{push_source}`)."
    )
    offline_path: str | None = Field(description="Parquet file materialization reads.")


class FeatureViewList(BaseModel):
    data: list[FeatureViewPublic]
    count: int


class OnlineFeaturesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1,
        max_length=256,
        description="`feature_view:field` references.",
        examples=[["user_stats:avg_amount_30d", "merchant_stats:merchant_risk_score"]],
    )
    entities: dict[Annotated[str, Field(max_length=128)],
                   Annotated[list[EntityValue], Field(max_length=MAX_ROWS)]] = Field(
        min_length=1,
        max_length=32,
        description="Join key → one value per row; every column the same length.",
        examples=[{"user_id": [1, 2], "merchant_id": [5, 6]}],
    )


class OnlineFeaturesMetadata(BaseModel):
    feature_names: list[str]
    rows: int


class OnlineFeaturesResponse(BaseModel):
    features: dict[str, list[Any]] = Field(
        description="Values per feature, in row order; null when not found."
    )
    metadata: OnlineFeaturesMetadata


class PushRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[Annotated[dict[str, Any], AfterValidator(int64_values)]] = Field(
        min_length=1,
        max_length=MAX_ROWS,
        description="Join keys and every field of the view; `event_timestamp` (ISO 8601) "
        "defaults to now, and may lie from 1970 to 5 minutes past the service's clock. "
        "A row older than the value already online is ignored by the online store.",
        examples=[
            [
                {
                    "user_id": 42,
                    "avg_amount_30d": 80.5,
                    "txn_count_7d": 3,
                    "account_age_days": 400,
                    "chargeback_rate": 0.0,
                }
            ]
        ],
    )


class PushResult(BaseModel):
    push_source: str
    feature_views: list[str]
    rows: int


class MaterializeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: datetime | None = Field(
        default=None, description="From when (after 1970); omitted: since the last run (incremental)."
    )
    end: datetime | None = Field(default=None, description="Until when (after 1970); omitted: now.")

    @field_validator("start", "end")
    @classmethod
    def _after_the_epoch(cls, moment: datetime | None) -> datetime | None:
        if moment is None:
            return None
        aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        if not EPOCH < aware < MAX_MOMENT:
            raise ValueError("must lie between 1970 and 2200")
        return aware


class MaterializedViewPublic(BaseModel):
    name: str
    start: datetime
    end: datetime
    rows: int = Field(description="Offline rows inside the interval.")
    entities: int = Field(description="Distinct entities written to the online store.")


class MaterializeResult(BaseModel):
    incremental: bool
    data: list[MaterializedViewPublic]
    count: int
