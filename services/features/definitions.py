"""The Feast repo of the fleet as Python objects: entities, sources and feature views.

Each feature view reads its offline parquet file through a ``FileSource`` and is fed through a
``PushSource`` wrapping that file source, so one entity's fresh values can be pushed straight
to the online store while materialization keeps reading the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Float64, Int64

EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"
FEATURE_TTL = timedelta(days=30)
"""How long a materialized or pushed value stays valid; covers the demo's weekly snapshots."""


@dataclass(frozen=True)
class FeatureRepo:
    entities: list[Entity]
    sources: list[FileSource | PushSource]
    feature_views: list[FeatureView]

    def objects(self) -> list[Entity | FileSource | PushSource | FeatureView]:
        """Everything ``FeatureStore.apply`` takes, in dependency order."""
        return [*self.entities, *self.sources, *self.feature_views]


def feature_repo(data_dir: Path) -> FeatureRepo:
    """The repo with its file sources under ``data_dir`` (resolved to an absolute path)."""
    data_dir = Path(data_dir).resolve()
    user = Entity(
        name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="A card holder."
    )
    merchant = Entity(
        name="merchant",
        join_keys=["merchant_id"],
        value_type=ValueType.INT64,
        description="A merchant accepting card payments.",
    )

    users_file = _file_source("users", data_dir)
    merchants_file = _file_source("merchants", data_dir)
    users_push = PushSource(
        name="user_stats_push",
        batch_source=users_file,
        description="Fresh user statistics, one entity at a time.",
    )
    merchants_push = PushSource(
        name="merchant_stats_push",
        batch_source=merchants_file,
        description="Fresh merchant statistics, one entity at a time.",
    )

    user_stats = FeatureView(
        name="user_stats",
        entities=[user],
        ttl=FEATURE_TTL,
        source=users_push,
        online=True,
        description="Spending profile and history of a card holder.",
        schema=[
            Field(name="user_id", dtype=Int64),
            Field(
                name="avg_amount_30d",
                dtype=Float64,
                description="Mean payment amount over 30 days.",
            ),
            Field(name="txn_count_7d", dtype=Int64, description="Payments in the last 7 days."),
            Field(
                name="account_age_days",
                dtype=Int64,
                description="Days since the account was opened.",
            ),
            Field(
                name="chargeback_rate",
                dtype=Float64,
                description="Share of past payments charged back.",
            ),
        ],
    )
    merchant_stats = FeatureView(
        name="merchant_stats",
        entities=[merchant],
        ttl=FEATURE_TTL,
        source=merchants_push,
        online=True,
        description="Risk profile of a merchant.",
        schema=[
            Field(name="merchant_id", dtype=Int64),
            Field(name="merchant_risk_score", dtype=Float64, description="Risk score in [0, 1]."),
            Field(
                name="merchant_fraud_rate_30d",
                dtype=Float64,
                description="Fraud share over 30 days.",
            ),
            Field(name="category_code", dtype=Int64, description="Merchant category, coded."),
        ],
    )
    return FeatureRepo(
        entities=[user, merchant],
        sources=[users_file, merchants_file, users_push, merchants_push],
        feature_views=[user_stats, merchant_stats],
    )


def _file_source(table: str, data_dir: Path) -> FileSource:
    return FileSource(
        name=f"{table}_file",
        path=str(data_dir / f"{table}.parquet"),
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED_TIMESTAMP,
        description=f"Offline {table} snapshots.",
    )
