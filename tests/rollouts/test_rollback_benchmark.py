"""``make bench-rollback``'s rounds, run against the rollout fleet: the benchmark times what the product does."""

from __future__ import annotations

import asyncio

from benchmarks.rollback import MODEL, prepare, summarise, timed_rollbacks
from tests.gateway.conftest import bearer


def test_each_timed_round_is_one_rollback_from_v2_to_v1_that_reaches_every_gateway(rollout_fleet):
    gateways = [gateway.url for gateway in rollout_fleet.gateways]
    with rollout_fleet.admin() as registry:
        prepare(registry)
    rounds = asyncio.run(timed_rollbacks(rollout_fleet.registry.url, bearer(rollout_fleet.admin_key), gateways,
                                         rounds=3))
    with rollout_fleet.admin() as registry:
        traffic = registry.get(f"/v1/models/{MODEL}/traffic").json()
        audit = registry.get("/v1/audit", params={"model": MODEL, "action": "traffic.rollback"}).json()["data"]
    rollbacks = [event for event in audit if event["detail"].get("reason") == "benchmark"]
    assert [(event["version"], event["detail"]["before"]["stable"]) for event in rollbacks] == [(1, 2)] * 3
    assert traffic["stable"] == 1
    summary = summarise(rounds, gateways=len(gateways))
    assert 0 < summary["all_gateways_serving"]["max_ms"] < 3000, summary
    assert all(0 < call < 3 for call, _ in rounds)
