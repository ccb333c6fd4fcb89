"""A separate FeatureStore, opened the way a gateway opens it, reads what the service wrote."""

from __future__ import annotations

from mlfleet.demo.data import feature_columns, latest
from services.common.feature_store import open_feature_store


async def test_gateway_store_reads_the_materialized_values(
    materialized, fraud_dataset, features_home, features_redis_url
):
    store = open_feature_store(redis_url=features_redis_url, feast_dir=features_home / "feast")
    try:
        response = await store.get_online_features_async(
            features=list(feature_columns),
            entity_rows={"user_id": [5, 6, 7], "merchant_id": [10, 11, 12]},
        )
        values = response.to_dict()
    finally:
        await store.close()
    users = latest(fraud_dataset.users, "user_id").loc[[5, 6, 7]]
    merchants = latest(fraud_dataset.merchants, "merchant_id").loc[[10, 11, 12]]
    for ref in feature_columns:
        view, field = ref.split(":")
        expected = (users if view == "user_stats" else merchants)[field].tolist()
        assert values[field] == expected, ref


async def test_gateway_store_sees_a_push(
    materialized, features_client, features_home, features_redis_url
):
    row = {
        "merchant_id": 77,
        "merchant_risk_score": 0.99,
        "merchant_fraud_rate_30d": 0.5,
        "category_code": 3,
    }
    assert (
        features_client.post("/v1/push/merchant_stats_push", json={"rows": [row]}).status_code
        == 200
    )
    store = open_feature_store(redis_url=features_redis_url, feast_dir=features_home / "feast")
    try:
        response = await store.get_online_features_async(
            features=["merchant_stats:merchant_risk_score", "merchant_stats:category_code"],
            entity_rows=[{"merchant_id": 77}],
        )
    finally:
        await store.close()
    assert response.to_dict() == {
        "merchant_id": [77],
        "merchant_risk_score": [0.99],
        "category_code": [3],
    }
