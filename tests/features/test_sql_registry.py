"""Feast's SQL registry on real PostgreSQL: a gateway on another machine (another folder, no shared
file) sees the feature views the features service applied, and reads what it pushed."""

from __future__ import annotations

import httpx

from mlfleet.demo.data import generate_dataset, write_offline_source
from services.common.feature_store import open_feature_store
from services.features.app import create_app
from services.features.settings import FeaturesSettings

SQL_REGISTRY_REDIS_DB = 11


async def test_gateways_share_the_features_service_registry_through_sql(postgres_url, redis_url, tmp_path,
                                                                       features_registry, admin_key):
    base, _, _ = redis_url.rpartition("/")
    online = f"{base}/{SQL_REGISTRY_REDIS_DB}"
    features_pod, gateway_pod = tmp_path / "features-pod", tmp_path / "gateway-pod"
    write_offline_source(generate_dataset(seed=5, n_users=20, n_merchants=5, n_transactions=50), features_pod / "data")
    app = create_app(FeaturesSettings(home=features_pod, redis_url=online, feast_registry_url=postgres_url,
                                      registry_url=features_registry.url))
    row = {"user_id": 4242, "avg_amount_30d": 42.5, "txn_count_7d": 3, "account_age_days": 400, "chargeback_rate": 0.0}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://features") as client:
            pushed = await client.post("/v1/push/user_stats_push", json={"rows": [row]},
                                       headers={"Authorization": f"Bearer {admin_key}"})
            assert pushed.status_code == 200, pushed.text

    store = open_feature_store(redis_url=online, feast_dir=gateway_pod / "feast", registry_url=postgres_url)
    try:
        assert {"user_stats", "merchant_stats"} <= {view.name for view in store.list_feature_views()}
        response = await store.get_online_features_async(
            features=["user_stats:avg_amount_30d", "user_stats:txn_count_7d"], entity_rows=[{"user_id": 4242}])
    finally:
        await store.close()
    assert response.to_dict() == {"user_id": [4242], "avg_amount_30d": [42.5], "txn_count_7d": [3]}
    assert not list(tmp_path.rglob("registry.db")), "no file registry is written when a SQL registry is configured"
