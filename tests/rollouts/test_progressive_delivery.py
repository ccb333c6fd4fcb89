"""Rollouts end to end: the controller judges live traffic (gateway → events → monitor) and promotes a
good canary, rolls back a failing or much slower one without a client noticing, and a manual rollback
reaches every gateway at once."""

from __future__ import annotations

import json
import time

import httpx

from mlfleet.runtime.processes import wait_until
from tests.gateway.conftest import bearer, register, set_traffic, train_onnx
from tests.rollouts.conftest import PUBLIC_URL, Traffic, served_revision, wait_for_rollout, wait_until_served

FAST = {"interval_s": 1.5, "min_requests": 5}


def deploy(fleet, model: str, faults: dict[int, dict] | None = None) -> None:
    """``model`` with a good stable v1 and candidate v2 (with ``faults``), stable v1 served by every gateway."""
    register(fleet.registry.url, model, {1: train_onnx(1), 2: train_onnx(2)}, key=fleet.admin_key, faults=faults)
    policy = set_traffic(fleet.registry.url, model, key=fleet.admin_key, stable=1)
    wait_until_served(fleet.gateways, model, policy["revision"])


def roll_out(fleet, model: str, **body) -> dict:
    """Start a rollout of v2 while traffic flows, and wait until it ends."""
    with fleet.admin() as admin, Traffic(fleet.gateways[0].url, model) as traffic:
        wait_until(lambda: traffic.sent >= 20, timeout_s=30, what="traffic flowing")
        started = admin.post(f"/v1/models/{model}/rollouts", json={"candidate": 2, **FAST, **body})
        assert started.status_code == 201, started.text
        assert started.json()["state"] == "running" and started.json()["canary_percent"] == body["steps"][0]
        rollout = wait_for_rollout(admin, model, started.json()["id"], {"promoted", "rolled_back", "aborted"}, 90)
    assert traffic.failures == [], f"{len(traffic.failures)} of {traffic.sent} client requests failed"
    assert set(traffic.versions) <= {1, 2}
    return rollout


def judged(rollout: dict) -> list[tuple[float, str]]:
    return [(s["canary_percent"], s["verdict"]) for s in rollout["history"] if s["verdict"] != "hold"]


def test_a_good_canary_is_promoted_through_every_step(rollout_fleet):
    model = "ro-good"
    deploy(rollout_fleet, model)
    rollout = roll_out(rollout_fleet, model, steps=[10, 25, 50, 75, 100])
    assert rollout["state"] == "promoted", json.dumps(rollout["history"], indent=1)
    assert judged(rollout) == [(10, "advance"), (25, "advance"), (50, "advance"), (75, "promote")]
    assert all(s["canary"]["requests"] >= 5 for s in rollout["history"] if s["verdict"] != "hold")
    assert all(s["canary"]["error_rate"] == 0 for s in rollout["history"])
    with rollout_fleet.admin() as admin:
        traffic = admin.get(f"/v1/models/{model}/traffic").json()
        assert (traffic["stable"], traffic["canary"]) == (2, None)
        actions = [(e["action"], e["actor"]) for e in admin.get("/v1/audit", params={"model": model}).json()["data"]]
    assert ("rollout.start", "bootstrap-admin") in actions
    assert actions.count(("rollout.advance", "controller")) == 3
    assert ("rollout.promote", "controller") in actions
    wait_until(lambda: "promoted" in rollout_fleet.webhooks.events(model), timeout_s=15, what="promoted webhook")
    assert rollout_fleet.webhooks.events(model) == ["started", "advanced", "advanced", "advanced", "promoted"]
    promoted = next(b for b in rollout_fleet.webhooks.bodies if b["namespace"] == model
                    and b["metadata"]["event_type"] == "promoted")
    assert (promoted["version"], promoted["status"], promoted["phase"]) == ("4", "resolved", "Succeeded")
    assert promoted["alerts"][0]["labels"]["model"] == model and promoted["alerts"][0]["startsAt"]
    assert promoted["alerts"][0]["generatorURL"] == f"{PUBLIC_URL}/v1/models/{model}/rollouts/{rollout['id']}"
    assert promoted["externalURL"] == PUBLIC_URL


def test_a_failing_canary_is_rolled_back_and_no_client_sees_it(rollout_fleet):
    model = "ro-failing"
    deploy(rollout_fleet, model, faults={2: {"fail_inference": True}})
    rollout = roll_out(rollout_fleet, model, steps=[20, 50, 100])
    assert rollout["state"] == "rolled_back", rollout["reason"]
    assert judged(rollout) == [(20, "fail")]
    failed = rollout["history"][-1]
    assert failed["canary"]["error_rate"] > failed["stable"]["error_rate"]
    assert any("error rate" in reason for reason in failed["reasons"])
    with rollout_fleet.admin() as admin:
        assert admin.get(f"/v1/models/{model}/versions/2").json()["status"] == "failed"
        traffic = admin.get(f"/v1/models/{model}/traffic").json()
        assert (traffic["stable"], traffic["canary"], traffic["canary_percent"]) == (1, None, 0)
        rollback = admin.get("/v1/audit", params={"model": model}).json()["data"]
        assert any(e["action"] == "rollout.rollback" and e["actor"] == "controller" for e in rollback)
    wait_until(lambda: "rolled_back" in rollout_fleet.webhooks.events(model), timeout_s=15, what="rolled_back webhook")
    body = next(b for b in rollout_fleet.webhooks.bodies if b["namespace"] == model
                and b["metadata"]["event_type"] == "rolled_back")
    assert (body["status"], body["phase"], body["alerts"][0]["labels"]["severity"]) == ("firing", "Failed", "critical")


def test_a_much_slower_canary_is_rolled_back(rollout_fleet):
    model = "ro-slow"
    deploy(rollout_fleet, model, faults={2: {"delay_ms": 150}})
    rollout = roll_out(rollout_fleet, model, steps=[20, 50, 100])
    assert rollout["state"] == "rolled_back", rollout["reason"]
    failed = rollout["history"][-1]
    assert failed["verdict"] == "fail"
    assert failed["canary"]["error_rate"] == 0
    assert failed["canary"]["p99_ms"] > 150 > failed["stable"]["p99_ms"]
    assert failed["canary"]["latency_p_value"] < 0.05
    assert any("canary is slower" in reason for reason in failed["reasons"])


def test_a_manual_rollback_reaches_both_gateways_within_a_second(rollout_fleet):
    model = "ro-manual"
    deploy(rollout_fleet, model)
    promoted = set_traffic(rollout_fleet.registry.url, model, key=rollout_fleet.admin_key, stable=2)
    wait_until_served(rollout_fleet.gateways, model, promoted["revision"])
    with httpx.Client(timeout=10) as client:
        started = time.perf_counter()
        response = client.post(f"{rollout_fleet.registry.url}/v1/models/{model}/rollback",
                               headers=bearer(rollout_fleet.admin_key), json={"reason": "v2 misbehaves"})
        assert response.status_code == 200, response.text
        revision = response.json()["revision"]
        served_after = {}
        while len(served_after) < len(rollout_fleet.gateways) and time.perf_counter() - started < 10:
            for gateway in rollout_fleet.gateways:
                if gateway.url not in served_after and served_revision(gateway) >= revision:
                    served_after[gateway.url] = time.perf_counter() - started
    print(f"\nmanual rollback served by {len(served_after)} gateways after "
          + ", ".join(f"{s * 1000:.0f} ms" for s in served_after.values()))
    assert response.json()["stable"] == 1 and response.json()["canary"] is None
    assert len(served_after) == 2 and max(served_after.values()) < 3.0, served_after
    for gateway in rollout_fleet.gateways:
        answer = httpx.post(f"{gateway.url}/v1/models/{model}/predict", json={"instances": [{"user_id": 3, "amount": 5}]})
        assert answer.json()["version"] == 1
    with rollout_fleet.admin() as admin:
        event = admin.get("/v1/audit", params={"model": model, "limit": 1}).json()["data"][0]
    assert (event["action"], event["actor"], event["detail"]["reason"]) == ("traffic.rollback", "bootstrap-admin",
                                                                           "v2 misbehaves")


def test_admin_actions_need_the_right_key_and_are_all_audited(rollout_fleet):
    model = "ro-admin"
    deploy(rollout_fleet, model)
    registry = rollout_fleet.registry.url
    with rollout_fleet.admin() as admin:
        keys = {role: admin.post("/v1/keys", json={"name": f"{role}-ro", "role": role}).json()["key"]
                for role in ("viewer", "deployer")}
        start = {"candidate": 2, "interval_s": 60, "min_requests": 5, "require_approval": True}
        missing = httpx.post(f"{registry}/v1/models/{model}/rollouts", json=start)
        assert (missing.status_code, missing.headers["content-type"]) == (401, "application/problem+json")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = httpx.post(f"{registry}/v1/models/{model}/rollouts", json=start, headers=bearer("mlf_wrong"))
        assert (wrong.status_code, wrong.json()["code"]) == (401, "unauthorized")
        viewer = httpx.post(f"{registry}/v1/models/{model}/rollouts", json=start, headers=bearer(keys["viewer"]))
        assert (viewer.status_code, viewer.json()["code"]) == (403, "forbidden")
        deployer = httpx.Client(base_url=registry, headers=bearer(keys["deployer"]), timeout=60)
        rollout_id = deployer.post(f"/v1/models/{model}/rollouts", json=start).json()["id"]
        conflict = deployer.post(f"/v1/models/{model}/rollouts", json=start)
        assert (conflict.status_code, conflict.json()["code"]) == (409, "rollout-conflict")
        for action in ("pause", "resume", "approve"):
            assert deployer.post(f"/v1/models/{model}/rollouts/{rollout_id}/{action}",
                                 json={"reason": f"testing {action}"}).status_code == 200
        assert deployer.post(f"/v1/models/{model}/rollouts/{rollout_id}/abort").json()["state"] == "aborted"
        deployer.close()
        audit = admin.get("/v1/audit", params={"model": model}).json()["data"]
    actions = [(e["action"], e["actor"]) for e in reversed(audit)]
    assert actions[-6:] == [("rollout.start", "deployer-ro"), ("rollout.pause", "deployer-ro"),
                            ("rollout.resume", "deployer-ro"), ("rollout.approve", "deployer-ro"),
                            ("traffic.set", "deployer-ro"), ("rollout.abort", "deployer-ro")]
