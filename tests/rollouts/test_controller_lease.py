"""Registry replicas on one database: every replica runs a rollout controller, but only the holder of the
controller's lease acts, so each step, audit event and webhook of a rollout happens exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text

from mlfleet.runtime.processes import wait_until
from tests.conftest import ServiceProcess, ServiceSpec, start_services
from tests.rollouts.test_progressive_delivery import deploy, judged, roll_out


@pytest.fixture
def replicas(rollout_fleet, workdir) -> Iterator[list[ServiceProcess]]:
    """Two more registry processes on the fleet registry's database, Triton, Redis, monitor and webhooks."""
    started = start_services({name: ServiceSpec("registry", rollout_fleet.registry_settings, workdir / "rollouts" / name)
                              for name in ("registry-b", "registry-c")})
    try:
        yield list(started.values())
    finally:
        for replica in started.values():
            replica.stop()


def lease_holder(database_url: str) -> tuple[str, datetime]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            holder, expires_at = connection.execute(
                text("SELECT holder, expires_at FROM leases WHERE name = 'rollout-controller'")).one()
    finally:
        engine.dispose()
    return holder, datetime.fromisoformat(expires_at).replace(tzinfo=UTC)


def test_replicas_on_one_database_judge_a_rollout_once(rollout_fleet, replicas):
    model = "ro-replicas"
    deploy(rollout_fleet, model)
    rollout = roll_out(rollout_fleet, model, steps=[10, 50, 100])
    assert rollout["state"] == "promoted", rollout["reason"]
    assert judged(rollout) == [(10, "advance"), (50, "promote")]

    holder, expires_at = lease_holder(rollout_fleet.registry_settings["database_url"])
    assert f"-{rollout_fleet.registry.process.pid}-" in holder, "the first registry keeps the lease it took"
    assert expires_at > datetime.now(UTC)
    with rollout_fleet.admin() as admin:
        audit = admin.get("/v1/audit", params={"model": model}).json()["data"]
    by_controller = Counter(e["action"] for e in audit if e["actor"] == "controller")
    assert by_controller == {"traffic.set": 2, "rollout.advance": 1, "rollout.promote": 1}
    wait_until(lambda: "promoted" in rollout_fleet.webhooks.events(model), timeout_s=15, what="promoted webhook")
    assert rollout_fleet.webhooks.events(model) == ["started", "advanced", "promoted"]
