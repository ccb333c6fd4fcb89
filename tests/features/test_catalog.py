"""Checks of feature references, entity keys and pushed rows against the catalog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from services.common.errors import InvalidInput, NotFound
from services.features.catalog import (
    Catalog,
    FieldSpec,
    ViewSpec,
    check_entities,
    push_frame,
    resolve_features,
)
from services.features.settings import FeaturesSettings

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
USERS = ViewSpec(
    name="user_stats",
    entities=("user",),
    join_keys=(FieldSpec("user_id", "Int64"),),
    fields=(FieldSpec("avg_amount_30d", "Float64"), FieldSpec("txn_count_7d", "Int64")),
    ttl=timedelta(days=30),
    push_source="user_stats_push",
    offline_path="/data/users.parquet",
)
MERCHANTS = ViewSpec(
    name="merchant_stats",
    entities=("merchant",),
    join_keys=(FieldSpec("merchant_id", "Int64"),),
    fields=(FieldSpec("merchant_risk_score", "Float64"),),
    ttl=timedelta(days=30),
    push_source="merchant_stats_push",
    offline_path="/data/merchants.parquet",
)
CATALOG = Catalog((USERS, MERCHANTS))


def _problems(excinfo) -> list[str]:
    return excinfo.value.extra["problems"]


def test_resolve_features_returns_each_view_once():
    views = resolve_features(
        CATALOG,
        [
            "user_stats:avg_amount_30d",
            "user_stats:txn_count_7d",
            "merchant_stats:merchant_risk_score",
        ],
    )
    assert [v.name for v in views] == ["user_stats", "merchant_stats"]


def test_resolve_features_names_every_unknown_reference():
    with pytest.raises(InvalidInput) as excinfo:
        resolve_features(CATALOG, ["nope:x", "user_stats:nope", "no_colon"])
    assert _problems(excinfo) == [
        "unknown feature view 'nope' in 'nope:x'",
        "feature view 'user_stats' has no field 'nope'",
        "'no_colon' is not 'feature_view:field'",
    ]


def test_check_entities_counts_rows():
    assert check_entities([USERS, MERCHANTS], {"user_id": [1, 2], "merchant_id": [5, 6]}) == 2


@pytest.mark.parametrize(
    ("entities", "problem"),
    [
        ({"merchant_id": [1]}, "missing entity key 'user_id'"),
        ({"user_id": [1], "shop": [2]}, "entity key 'shop' is not used by the requested features"),
        ({"user_id": ["7"]}, "entity key 'user_id': expected Int64, got '7'"),
        ({"user_id": []}, "entity key columns need 1 to 10000 values"),
    ],
)
def test_check_entities_rejects(entities, problem):
    with pytest.raises(InvalidInput) as excinfo:
        check_entities([USERS], entities)
    assert problem in _problems(excinfo)


def test_check_entities_rejects_unequal_columns():
    with pytest.raises(InvalidInput) as excinfo:
        check_entities([USERS, MERCHANTS], {"user_id": [1, 2], "merchant_id": [5]})
    assert _problems(excinfo) == ["entity key columns must all have the same length"]


def test_push_frame_fills_timestamps_and_keeps_values():
    frame = push_frame(
        USERS,
        [
            {"user_id": 1, "avg_amount_30d": 12, "txn_count_7d": 3},
            {
                "user_id": 2,
                "avg_amount_30d": 5.5,
                "txn_count_7d": 0,
                "event_timestamp": "2026-02-01T10:00:00+01:00",
            },
        ],
        now=NOW,
    )
    assert frame["user_id"].tolist() == [1, 2]
    assert frame["avg_amount_30d"].tolist() == [12.0, 5.5]
    assert frame["event_timestamp"].tolist() == [
        pd.Timestamp(NOW),
        pd.Timestamp("2026-02-01T09:00:00Z"),
    ]
    assert (frame["created_timestamp"] == pd.Timestamp(NOW)).all()


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (
            {"user_id": 1, "avg_amount_30d": 1.0, "txn_count_7d": 1, "colour": "red"},
            "row 0: unknown field 'colour' for view 'user_stats'",
        ),
        ({"user_id": 1, "avg_amount_30d": 1.0}, "row 0: missing field 'txn_count_7d'"),
        (
            {"user_id": 1, "avg_amount_30d": 1.0, "txn_count_7d": 1.5},
            "row 0: field 'txn_count_7d': expected Int64, got 1.5",
        ),
        (
            {"user_id": True, "avg_amount_30d": 1.0, "txn_count_7d": 1},
            "row 0: field 'user_id': expected Int64, got True",
        ),
        (
            {"user_id": 1, "avg_amount_30d": "high", "txn_count_7d": 1},
            "row 0: field 'avg_amount_30d': expected Float64, got 'high'",
        ),
        (
            {
                "user_id": 1,
                "avg_amount_30d": 1.0,
                "txn_count_7d": 1,
                "event_timestamp": "yesterday",
            },
            "row 0: event_timestamp 'yesterday' is not an ISO 8601 time",
        ),
    ],
)
def test_push_frame_rejects(row, problem):
    with pytest.raises(InvalidInput) as excinfo:
        push_frame(USERS, [row], now=NOW)
    assert problem in _problems(excinfo)


def test_view_for_push_knows_its_sources():
    assert CATALOG.view_for_push("merchant_stats_push") is MERCHANTS
    with pytest.raises(NotFound) as excinfo:
        CATALOG.view_for_push("nope")
    assert excinfo.value.extra["known"] == ["merchant_stats_push", "user_stats_push"]


def test_settings_put_folders_under_home(monkeypatch):
    monkeypatch.setenv("MLFLEET_FEATURES_HOME", "/srv/fleet")
    monkeypatch.setenv("MLFLEET_FEATURES_DATA_DIR", "/mnt/offline")
    settings = FeaturesSettings()
    assert settings.feast_dir == Path("/srv/fleet/feast")
    assert settings.data_dir == Path("/mnt/offline")
    assert settings.port == 8082
