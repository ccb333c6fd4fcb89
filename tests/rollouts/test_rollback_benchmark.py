"""``make bench-rollback``'s rounds, run against the rollout fleet: the benchmark times what the product does."""

from __future__ import annotations

import httpx

from benchmarks.rollback import MODEL, prepare, summarise, timed_rollbacks
from tests.gateway.conftest import bearer


def test_the_rollback_benchmark_times_rounds_that_each_reach_every_gateway(rollout_fleet):
    gateways = [gateway.url for gateway in rollout_fleet.gateways]
    with httpx.Client(base_url=rollout_fleet.registry.url, timeout=120, headers=bearer(rollout_fleet.admin_key)) as registry:
        prepare(registry)
        rounds = timed_rollbacks(registry, rollout_fleet.admin_key, gateways, rounds=3)
        traffic = registry.get(f"/v1/models/{MODEL}/traffic").json()
        audit = registry.get("/v1/audit", params={"model": MODEL, "action": "traffic.rollback"}).json()["data"]
    summary = summarise(rounds, gateways=len(gateways))
    assert summary["rollbacks"] == 3 and all(len(r["gateways_serving_ms"]) == 2 for r in summary["rounds"])
    assert summary["all_gateways_serving"]["max_ms"] < 3000, summary
    assert traffic["stable"] == 1
    assert len([event for event in audit if event["detail"].get("reason") == "benchmark"]) == 3
