"""The rollout API in process, with real Triton and Redis: validation, conflicts, manual moves, instant
rollback, and a controller that survives a restart. The monitor is unreachable here, so the controller
can only hold — which is itself checked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import create_engine, text

from services.registry.schemas import RolloutCreate
from tests.registry.factories import model_name, train_classifier
from tests.registry.harness import dead_address, running_registry
from tests.registry.test_api import assert_problem, create_model, register


@pytest.fixture
def settings(sqlite_settings):
    return sqlite_settings.model_copy(update={"monitor_url": f"http://{dead_address()}", "rollout_tick_s": 0.1,
                                              "monitor_timeout_s": 0.5})


async def two_versions(client, trained, trained_v2, **traffic) -> str:
    name = model_name()
    await create_model(client, name)
    await register(client, name, trained.onnx)
    await register(client, name, trained_v2.onnx)
    assert (await client.put(f"/v1/models/{name}/traffic", json=traffic or {"stable": 1})).status_code == 200
    return name


async def eventually(predicate, timeout_s: float = 10.0):
    async with asyncio.timeout(timeout_s):
        while not (result := await predicate()):
            await asyncio.sleep(0.05)
    return result


@pytest.mark.parametrize("body, message", [
    ({"candidate": 2, "steps": []}, "at least 1 item"),
    ({"candidate": 2, "steps": [10, 10]}, "must increase"),
    ({"candidate": 2, "steps": [50, 20]}, "must increase"),
    ({"candidate": 2, "steps": [0, 50]}, "(0, 100]"),
    ({"candidate": 2, "steps": [100]}, "below 100"),
    ({"candidate": 2, "steps": [10.001]}, "two decimals"),
    ({"candidate": 2, "interval_s": 0}, "greater than 0"),
    ({"candidate": 2, "checks": {"max_p99_latency_ratio": 0.9}}, "greater than or equal to 1"),
    ({"candidate": 2, "max_failures": 0}, "greater than or equal to 1"),
    ({"candidate": 2, "interval_s": 120, "progress_deadline_s": 120}, "must exceed interval_s"),
])
def test_invalid_rollouts_are_refused(body, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace("]", r"\]")):
        RolloutCreate.model_validate(body)


def test_rollout_defaults_follow_the_case_study():
    body = RolloutCreate(candidate=2)
    assert body.steps == [10, 25, 50, 75, 100] and body.interval_s == 60 and body.min_requests == 100
    assert body.checks.model_dump() == {"max_error_rate_increase": 0.0, "max_p99_latency_ratio": 1.10,
                                        "latency_tolerance_ms": 2.0, "min_accuracy_delta": 0.0,
                                        "latency_test_alpha": 0.05, "rate_test_alpha": 0.05}
    assert (body.max_failures, body.require_approval, body.progress_deadline_s) == (1, False, 3600)
    assert RolloutCreate(candidate=2, interval_s=7200).progress_deadline_s == 72_000, "ten intervals, when longer"


async def test_start_conflicts_and_manual_moves(settings, trained, trained_v2):
    async with running_registry(settings) as client:
        name = await two_versions(client, trained, trained_v2)
        rollouts = f"/v1/models/{name}/rollouts"
        assert_problem(await client.post(rollouts, json={"candidate": 9}), 404, "version-not-found")
        assert_problem(await client.post(rollouts, json={"candidate": 1}), 409, "conflict")
        assert_problem(await client.post(rollouts, json={"candidate": 2, "steps": [5, 3]}), 422, "invalid-input")
        assert_problem(await client.post(f"/v1/models/{model_name()}/rollouts", json={"candidate": 2}), 404,
                       "model-not-found")

        started = await client.post(rollouts, json={"candidate": 2, "steps": [5, 50], "interval_s": 600,
                                                     "require_approval": True})
        assert started.status_code == 201, started.text
        rollout = started.json()
        assert (rollout["state"], rollout["baseline"], rollout["candidate"], rollout["canary_percent"]) == (
            "running", 1, 2, 5)
        traffic = (await client.get(f"/v1/models/{name}/traffic")).json()
        assert (traffic["stable"], traffic["canary"], traffic["canary_percent"]) == (1, 2, 5)
        assert_problem(await client.post(rollouts, json={"candidate": 2}), 409, "rollout-conflict")
        assert_problem(await client.put(f"/v1/models/{name}/traffic", json={"stable": 2}), 409, "rollout-conflict")
        assert_problem(await client.get(f"{rollouts}/999999"), 404, "not-found")
        one = f"{rollouts}/{rollout['id']}"
        assert (await client.post(f"{one}/resume")).json()["state"] == "running", "resuming a running one: a no-op"
        assert (await client.post(f"{one}/pause")).json()["state"] == "paused"
        assert (await client.post(f"{one}/pause")).json()["state"] == "paused", "as pausing a paused one is"
        assert (await client.post(f"{one}/resume", json={"reason": "back"})).json()["state"] == "running"
        assert (await client.post(f"{one}/approve")).json()["approved"] is True
        promoted = (await client.post(f"{one}/promote", json={"reason": "looks good"})).json()
        assert (promoted["state"], promoted["canary_percent"], promoted["reason"]) == ("promoted", 100, "looks good")
        traffic = (await client.get(f"/v1/models/{name}/traffic")).json()
        assert (traffic["stable"], traffic["canary"]) == (2, None)
        assert_problem(await client.post(f"{one}/abort"), 409, "rollout-conflict")
        assert (await client.get(rollouts)).json()["count"] == 1

        back = await client.post(f"/v1/models/{name}/rollback", json={"reason": "regret"})
        assert back.status_code == 200, back.text
        assert (back.json()["stable"], back.json()["canary"]) == (1, None)
        routes = (await client.get("/v1/routes")).json()
        assert [v["version"] for v in next(m for m in routes["models"] if m["model"] == name)["versions"]] == [1]
        again = await client.post(f"/v1/models/{name}/rollback")
        assert_problem(again, 409, "conflict")  # a double click does not put back the version just left
        assert (await client.get(f"/v1/models/{name}/traffic")).json()["stable"] == 1
        audit = [e["action"] for e in (await client.get("/v1/audit", params={"model": name})).json()["data"]]
        assert audit[:4] == ["traffic.rollback", "rollout.promote", "traffic.set", "rollout.approve"]


async def test_rollback_during_a_rollout_clears_the_canary_and_keeps_the_version(settings, trained, trained_v2):
    async with running_registry(settings) as client:
        name = await two_versions(client, trained, trained_v2)
        assert_problem(await client.post(f"/v1/models/{name}/rollback"), 409, "conflict")
        rollout = (await client.post(f"/v1/models/{name}/rollouts", json={"candidate": 2, "interval_s": 600})).json()
        refused = await client.post(f"/v1/models/{name}/rollouts/{rollout['id']}/approve", json={"reason": "ok"})
        assert_problem(refused, 409, "rollout-conflict")  # nothing waits for an approval; its reason stays
        assert "require_approval" in refused.json()["detail"]
        assert (await client.get(f"/v1/models/{name}/rollouts/{rollout['id']}")).json()["reason"] != "ok"
        back = (await client.post(f"/v1/models/{name}/rollback")).json()
        assert (back["stable"], back["canary"], back["canary_percent"]) == (1, None, 0)
        after = (await client.get(f"/v1/models/{name}/rollouts/{rollout['id']}")).json()
        assert after["state"] == "rolled_back"
        assert (await client.get(f"/v1/models/{name}/versions/2")).json()["status"] == "registered"


async def test_a_second_rollback_after_a_rollouts_rollback_keeps_the_stable(settings, trained, trained_v2):
    """Stable v2 (v1 before it), a rollout of v3 rolled back: a second click must not also demote v2 to v1."""
    async with running_registry(settings) as client:
        name = await two_versions(client, trained, trained_v2)
        await register(client, name, train_classifier(seed=2).onnx)
        assert (await client.put(f"/v1/models/{name}/traffic", json={"stable": 2})).status_code == 200
        rollout = (await client.post(f"/v1/models/{name}/rollouts", json={"candidate": 3, "interval_s": 600})).json()
        assert (await client.post(f"/v1/models/{name}/rollback")).json()["canary"] is None
        again = await client.post(f"/v1/models/{name}/rollback", json={"reason": "double click"})
        assert_problem(again, 409, "conflict")
        assert f"rollout {rollout['id']}" in again.json()["detail"]
        assert (await client.get(f"/v1/models/{name}/traffic")).json()["stable"] == 2
        aborted = (await client.post(f"/v1/models/{name}/rollouts", json={"candidate": 3, "interval_s": 600})).json()
        await client.post(f"/v1/models/{name}/rollouts/{aborted['id']}/abort")
        assert_problem(await client.post(f"/v1/models/{name}/rollback"), 409, "conflict")

        assert (await client.put(f"/v1/models/{name}/traffic", json={"stable": 2, "shadow": 3})).status_code == 200
        back = await client.post(f"/v1/models/{name}/rollback")  # the traffic changed since: a rollback undoes it
        assert back.status_code == 200 and back.json()["stable"] == 1, back.text

        listed = f"/v1/models/{name}/rollouts"
        assert [r["id"] for r in (await client.get(listed)).json()["data"]] == [aborted["id"], rollout["id"]]
        newest = (await client.get(listed, params={"limit": 1})).json()
        assert (newest["count"], [r["id"] for r in newest["data"]]) == (1, [aborted["id"]])
        rolled_back = (await client.get(listed, params={"state": "rolled_back"})).json()["data"]
        assert [r["id"] for r in rolled_back] == [rollout["id"]]
        assert (await client.get(listed, params={"state": "running"})).json() == {"data": [], "count": 0}
        assert_problem(await client.get(listed, params={"state": "done"}), 422, "invalid-input")
        assert_problem(await client.get(listed, params={"limit": 1001}), 422, "invalid-input")


async def test_the_controller_holds_without_a_monitor_and_resumes_after_a_restart(settings, trained, trained_v2):
    async with running_registry(settings) as client:
        name = await two_versions(client, trained, trained_v2)
        body = {"candidate": 2, "steps": [10, 100], "interval_s": 0.3, "min_requests": 1}
        rollout_id = (await client.post(f"/v1/models/{name}/rollouts", json=body)).json()["id"]
        url = f"/v1/models/{name}/rollouts/{rollout_id}"

        async def held() -> dict | None:
            rollout = (await client.get(url)).json()
            return rollout if rollout["history"] else None

        first = await eventually(held)
        step = first["history"][0]
        assert (step["verdict"], step["canary_percent"], step["canary"]) == ("hold", 10, {})
        assert "monitor" in step["reasons"][0] and "not reachable" in step["reasons"][0]
    before = recorded_steps(settings.database_url, rollout_id)
    assert len(before) == 1, "a run of holds is one step, its time the latest (not one row per tick)"
    async with running_registry(settings) as client:
        async def judged_again() -> bool:
            rollout = (await client.get(url)).json()
            return rollout["state"] == "running" and utc(rollout["history"][-1]["at"]) > before[0]

        await eventually(judged_again)
    assert len(recorded_steps(settings.database_url, rollout_id)) == 1


async def test_a_rollout_without_a_verdict_past_its_progress_deadline_is_aborted(settings, trained, trained_v2):
    async with running_registry(settings) as client:
        name = await two_versions(client, trained, trained_v2)
        body = {"candidate": 2, "steps": [10, 100], "interval_s": 0.3, "min_requests": 1, "progress_deadline_s": 1.5}
        started = (await client.post(f"/v1/models/{name}/rollouts", json=body)).json()
        assert started["progress_deadline_s"] == 1.5
        url = f"/v1/models/{name}/rollouts/{started['id']}"

        async def ended() -> dict | None:
            rollout = (await client.get(url)).json()
            return rollout if rollout["state"] != "running" else None

        rollout = await eventually(ended)
        assert rollout["state"] == "aborted" and "progress deadline of 1.5 s" in rollout["reason"]
        assert utc(rollout["updated_at"]) - utc(rollout["created_at"]) >= timedelta(seconds=1.5)
        [held] = rollout["history"]  # the run of holds and the abort that ended it are one row
        assert held["verdict"] == "hold" and "not reachable" in held["reasons"][0] and "aborting" in held["reasons"][-1]
        traffic = (await client.get(f"/v1/models/{name}/traffic")).json()
        assert (traffic["stable"], traffic["canary"], traffic["canary_percent"]) == (1, None, 0)
        assert (await client.get(f"/v1/models/{name}/versions/2")).json()["status"] == "registered"
        audit = (await client.get("/v1/audit", params={"model": name})).json()["data"]
        assert (audit[0]["action"], audit[0]["actor"]) == ("rollout.abort", "controller")


async def test_a_version_a_rollout_failed_is_served_again_only_when_allowed(settings, trained, trained_v2):
    """A version the controller rolled back serves again only on purpose (`allow_failed`); promoted, it passed."""
    async with running_registry(settings) as client:
        name = await two_versions(client, trained, trained_v2)
        mark_failed(settings.database_url, name, 2)
        traffic, rollouts = f"/v1/models/{name}/traffic", f"/v1/models/{name}/rollouts"
        refused = await client.put(traffic, json={"stable": 1, "canary": 2, "canary_percent": 10})
        assert_problem(refused, 409, "conflict")
        assert "allow_failed" in refused.json()["detail"]
        assert_problem(await client.post(rollouts, json={"candidate": 2}), 409, "conflict")
        assert (await client.get(traffic)).json()["canary"] is None, "nothing changed"

        allowed = await client.put(traffic, params={"allow_failed": "true"},
                                   json={"stable": 1, "canary": 2, "canary_percent": 10})
        assert allowed.status_code == 200 and allowed.json()["canary"] == 2, allowed.text
        served = await client.put(traffic, json={"stable": 1, "canary": 2, "canary_percent": 20})
        assert served.status_code == 200, "a version the policy already serves needs no flag again"
        assert (await client.put(traffic, json={"stable": 1})).status_code == 200

        started = await client.post(rollouts, params={"allow_failed": "true"}, json={"candidate": 2, "interval_s": 600})
        assert started.status_code == 201, started.text
        await client.post(f"{rollouts}/{started.json()['id']}/promote")
        assert (await client.get(f"/v1/models/{name}/versions/2")).json()["status"] == "registered"


def mark_failed(database_url: str, model: str, version: int) -> None:
    """As the controller's rollback marks a candidate (set in the database: judging a real failing canary is
    tests/rollouts' work)."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE model_versions SET status = 'failed' WHERE version = :version AND model_id = "
                                    "(SELECT id FROM models WHERE name = :model)"), {"version": version, "model": model})
    finally:
        engine.dispose()


def recorded_steps(database_url: str, rollout_id: int) -> list[datetime]:
    """When each step was last judged, read from the database while no registry runs."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT at FROM rollout_steps WHERE rollout_id = :id ORDER BY id"),
                                      {"id": rollout_id}).scalars()
            return [utc(at) for at in rows]
    finally:
        engine.dispose()


def utc(at: datetime | str) -> datetime:
    """A time from the API or either database, as an aware UTC datetime (SQLite keeps them naive)."""
    moment = at if isinstance(at, datetime) else datetime.fromisoformat(at)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
