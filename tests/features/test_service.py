"""The features service as a real process on real Redis: list, materialize, lookup, push, errors."""

from __future__ import annotations

import math

import httpx
import pytest

from mlfleet.demo.data import latest
from mlfleet.runtime.processes import free_port
from services.common.errors import PROBLEM_JSON
from tests.conftest import start_service

USER_FIELDS = ["avg_amount_30d", "txn_count_7d", "account_age_days", "chargeback_rate"]
MERCHANT_FIELDS = ["merchant_risk_score", "merchant_fraud_rate_30d", "category_code"]


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["status"] == status
    return body


def test_ready_with_redis_and_definitions(features_client):
    response = features_client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"redis": True, "definitions": True}


def test_lists_feature_views_with_fields_and_ttl(features_client, features_home):
    body = features_client.get("/v1/features").json()
    assert body["count"] == 2
    views = {v["name"]: v for v in body["data"]}
    users = views["user_stats"]
    assert users["entities"] == ["user"]
    assert users["join_keys"] == [{"name": "user_id", "dtype": "Int64"}]
    assert users["fields"] == [
        {"name": n, "dtype": d}
        for n, d in zip(USER_FIELDS, ["Float64", "Int64", "Int64", "Float64"], strict=True)
    ]
    assert users["ttl_seconds"] == 30 * 86_400
    assert users["push_source"] == "user_stats_push"
    assert users["offline_path"] == str((features_home / "data" / "users.parquet").resolve())
    assert [f["name"] for f in views["merchant_stats"]["fields"]] == MERCHANT_FIELDS


def test_incremental_materialization_loads_every_snapshot(
    materialized, fraud_dataset, features_client
):
    assert materialized["incremental"] is True
    counts = {v["name"]: (v["rows"], v["entities"]) for v in materialized["data"]}
    assert counts == {
        "user_stats": (len(fraud_dataset.users), fraud_dataset.users["user_id"].nunique()),
        "merchant_stats": (
            len(fraud_dataset.merchants),
            fraud_dataset.merchants["merchant_id"].nunique(),
        ),
    }
    again = features_client.post("/v1/materialize", json={}).json()
    assert [v["rows"] for v in again["data"]] == [0, 0]


def test_online_lookup_returns_the_latest_snapshot(materialized, fraud_dataset, features_client):
    users = latest(fraud_dataset.users, "user_id")
    merchants = latest(fraud_dataset.merchants, "merchant_id")
    user_ids, merchant_ids = [3, 17, 250], [1, 40, 80]
    refs = [f"user_stats:{f}" for f in USER_FIELDS] + [
        f"merchant_stats:{f}" for f in MERCHANT_FIELDS
    ]
    response = features_client.post(
        "/v1/features/online",
        json={"features": refs, "entities": {"user_id": user_ids, "merchant_id": merchant_ids}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    for field in USER_FIELDS:
        assert body["features"][f"user_stats:{field}"] == users.loc[user_ids, field].tolist()
    for field in MERCHANT_FIELDS:
        assert (
            body["features"][f"merchant_stats:{field}"]
            == merchants.loc[merchant_ids, field].tolist()
        )
    previous = (
        fraud_dataset.users.groupby("user_id")["avg_amount_30d"].first().loc[user_ids].tolist()
    )
    assert body["features"]["user_stats:avg_amount_30d"] != previous
    assert body["metadata"] == {"feature_names": refs, "rows": 3}


def test_unknown_entities_get_nulls(materialized, features_client):
    body = features_client.post(
        "/v1/features/online",
        json={"features": ["user_stats:avg_amount_30d"], "entities": {"user_id": [1, 987_654]}},
    ).json()
    assert body["features"]["user_stats:avg_amount_30d"][0] is not None
    assert body["features"]["user_stats:avg_amount_30d"][1] is None


def test_push_then_lookup_returns_the_pushed_values(materialized, fraud_dataset, features_client):
    fresh = {
        "user_id": 42,
        "avg_amount_30d": 1234.5,
        "txn_count_7d": 99,
        "account_age_days": 7,
        "chargeback_rate": 0.25,
    }
    response = features_client.post("/v1/push/user_stats_push", json={"rows": [fresh]})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "push_source": "user_stats_push",
        "feature_views": ["user_stats"],
        "rows": 1,
    }
    body = features_client.post(
        "/v1/features/online",
        json={
            "features": [f"user_stats:{f}" for f in USER_FIELDS],
            "entities": {"user_id": [42, 43]},
        },
    ).json()
    assert [body["features"][f"user_stats:{f}"][0] for f in USER_FIELDS] == [
        fresh[f] for f in USER_FIELDS
    ]
    untouched = latest(fraud_dataset.users, "user_id").loc[43, "avg_amount_30d"]
    assert body["features"]["user_stats:avg_amount_30d"][1] == untouched
    metrics = features_client.get("/metrics").text
    assert 'mlfleet_features_pushed_rows_total{push_source="user_stats_push"} 1.0' in metrics


def test_explicit_range_materializes_only_that_range(materialized, fraud_dataset, features_client):
    stamps = fraud_dataset.users["event_timestamp"].sort_values()
    start, end = stamps.iloc[-10], stamps.iloc[-1]
    response = features_client.post(
        "/v1/materialize", json={"start": start.isoformat(), "end": end.isoformat()}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["incremental"] is False
    counts = {v["name"]: v["rows"] for v in body["data"]}

    def inside(frame):
        return int(frame["event_timestamp"].between(start, end).sum())

    assert counts == {
        "user_stats": inside(fraud_dataset.users),
        "merchant_stats": inside(fraud_dataset.merchants),
    }
    assert counts["user_stats"] >= 10


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"features": ["nope:x"], "entities": {"user_id": [1]}},
            "unknown feature view 'nope' in 'nope:x'",
        ),
        (
            {"features": ["user_stats:nope"], "entities": {"user_id": [1]}},
            "feature view 'user_stats' has no field 'nope'",
        ),
        (
            {"features": ["user_stats:txn_count_7d"], "entities": {"merchant_id": [1]}},
            "missing entity key 'user_id'",
        ),
        (
            {"features": ["user_stats:txn_count_7d"], "entities": {"user_id": ["1"]}},
            "entity key 'user_id': expected Int64, got '1'",
        ),
    ],
)
def test_bad_lookups_are_named_problems(features_client, body, detail):
    problem = _problem(features_client.post("/v1/features/online", json=body), 422)
    assert problem["code"] == "invalid-input"
    assert detail in problem["problems"]


def test_lookup_body_is_validated(features_client):
    problem = _problem(features_client.post("/v1/features/online", json={"features": []}), 422)
    assert {tuple(e["loc"]) for e in problem["errors"]} == {
        ("body", "features"),
        ("body", "entities"),
    }
    broken = features_client.post(
        "/v1/features/online", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert _problem(broken, 400)["code"] == "bad-request"


@pytest.mark.parametrize(
    ("row", "detail"),
    [
        (
            {
                "user_id": 1,
                "avg_amount_30d": 1.0,
                "txn_count_7d": 1,
                "account_age_days": 3,
                "chargeback_rate": 0.0,
                "shoe_size": 44,
            },
            "row 0: unknown field 'shoe_size' for view 'user_stats'",
        ),
        (
            {
                "user_id": 1,
                "avg_amount_30d": 1.0,
                "txn_count_7d": "many",
                "account_age_days": 3,
                "chargeback_rate": 0.0,
            },
            "row 0: field 'txn_count_7d': expected Int64, got 'many'",
        ),
        ({"user_id": 1}, "row 0: missing field 'avg_amount_30d'"),
        ({"user_id": 1, "avg_amount_30d": 1.0, "txn_count_7d": 1, "account_age_days": 3, "chargeback_rate": 0.0,
          "event_timestamp": "2999-01-01T00:00:00Z"},  # beyond pandas' nanosecond range: was a 500
         "row 0: event_timestamp '2999-01-01T00:00:00Z' must lie between 1970 and now"),
        ({"user_id": 1, "avg_amount_30d": 1.0, "txn_count_7d": 1, "account_age_days": 3, "chargeback_rate": 0.0,
          "event_timestamp": "2200-01-01T00:00:00Z"},  # would have hidden every later push of user 1 until 2200
         "row 0: event_timestamp '2200-01-01T00:00:00Z' must lie between 1970 and now"),
    ],
)
def test_bad_pushes_are_named_problems(features_client, row, detail):
    problem = _problem(features_client.post("/v1/push/user_stats_push", json={"rows": [row]}), 422)
    assert any(p.startswith(detail) for p in problem["problems"]), problem


def test_push_to_an_unknown_source_is_not_found(features_client):
    problem = _problem(features_client.post("/v1/push/nope", json={"rows": [{"user_id": 1}]}), 404)
    assert problem["known"] == ["merchant_stats_push", "user_stats_push"]


def test_materialize_rejects_an_inverted_range(features_client):
    response = features_client.post(
        "/v1/materialize", json={"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
    )
    assert "is after end" in _problem(response, 422)["detail"]


@pytest.mark.parametrize("body", [{"start": None, "end": "1124-03-14T15:35:13+06:42"},
                                  {"start": "1969-12-31T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
                                  {"end": "9999-01-01T00:00:00Z"}])
def test_materialize_rejects_moments_outside_the_stores_range(features_client, body):
    problem = _problem(features_client.post("/v1/materialize", json=body), 422)
    assert "between 1970 and 2200" in str(problem["errors"])


def test_materialize_without_offline_data_is_a_conflict(workdir, features_redis_url, features_registry, admin_key):
    service = start_service(
        "features", {"redis_url": features_redis_url, "registry_url": features_registry.url},
        workdir / "features-empty"
    )
    try:
        response = httpx.post(f"{service.url}/v1/materialize", json={}, timeout=60,
                              headers={"Authorization": f"Bearer {admin_key}"})
        problem = _problem(response, 409)
        assert problem["detail"] == "no offline data; run the demo or write the source"
        assert len(problem["missing"]) == 2
    finally:
        service.stop()


def test_values_are_finite_numbers(materialized, features_client):
    body = features_client.post(
        "/v1/features/online",
        json={
            "features": ["merchant_stats:merchant_risk_score"],
            "entities": {"merchant_id": list(range(1, 81))},
        },
    ).json()
    values = body["features"]["merchant_stats:merchant_risk_score"]
    assert all(isinstance(v, float) and math.isfinite(v) and 0 < v < 1 for v in values)


def test_without_redis_not_ready_and_lookups_unavailable(workdir, features_home):
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    home = workdir / "features-no-redis"
    settings = {"redis_url": dead_redis, "data_dir": features_home / "data"}
    service = start_service("features", settings, home, ready_path="/healthz")
    try:
        ready = httpx.get(f"{service.url}/readyz", timeout=30)
        assert _problem(ready, 503)["checks"] == {"redis": False, "definitions": True}
        lookup = httpx.post(
            f"{service.url}/v1/features/online",
            json={"features": ["user_stats:txn_count_7d"], "entities": {"user_id": [1]}},
            timeout=30,
        )
        assert _problem(lookup, 503)["code"] == "backend-unavailable"
    finally:
        service.stop()


def test_writing_the_online_store_needs_a_deployer_key(materialized, features_service, features_registry, admin_key):
    """Every model scores on what is pushed or materialized: a deployer's action; reads stay open."""
    def as_key(key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    viewer = httpx.post(f"{features_registry.url}/v1/keys", json={"name": "features-viewer", "role": "viewer"},
                        headers=as_key(admin_key), timeout=30).json()["key"]
    row = {"user_id": 7, "avg_amount_30d": 1.0, "txn_count_7d": 987_654, "account_age_days": 1, "chargeback_rate": 0.0}
    for path, body in (("/v1/push/user_stats_push", {"rows": [row]}), ("/v1/materialize", {})):
        assert "key" in _problem(httpx.post(features_service.url + path, json=body, timeout=30), 401)["detail"]
        forbidden = _problem(httpx.post(features_service.url + path, json=body, headers=as_key(viewer), timeout=30),
                             403)
        assert "deployer" in forbidden["detail"]
    online = httpx.post(f"{features_service.url}/v1/features/online", timeout=30,
                        json={"features": ["user_stats:txn_count_7d"], "entities": {"user_id": [7]}})
    assert online.status_code == 200 and online.json()["features"]["user_stats:txn_count_7d"] != [987_654]
