"""The reconcile loop that keeps Triton in step with the traffic policies: a real registry database (SQLite and
PostgreSQL), a scripted Triton (what it serves, and which loads fail or wait)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry

from services.common.errors import BackendUnavailable
from services.registry import repository
from services.registry.database import Database
from services.registry.errors import ModelLoadFailed
from services.registry.schemas import TrafficUpdate
from services.registry.telemetry import RegistryMetrics
from services.registry.traffic import TrafficController

SIGNATURE = {"inputs": [{"name": "x0"}], "output": {}}


class ScriptedTriton:
    """Serves what it was last loaded with; loads of ``failing`` models fail, and a load (of a ``gated`` model, when
    given) waits for ``gate``."""

    def __init__(self, *, failing: set[str] = frozenset(), gate: asyncio.Event | None = None,
                 gated: set[str] | None = None) -> None:
        self.served: dict[str, set[int]] = {}
        self.loads: list[tuple[str, list[int]]] = []
        self.failing = failing
        self.gate = gate
        self.gated = gated

    async def ready_versions(self, model: str, versions) -> set[int]:
        return self.served.get(model, set()) & set(versions)

    async def load(self, model: str, artifacts, faults) -> None:
        self.loads.append((model, sorted(artifacts)))
        if self.gate is not None and (self.gated is None or model in self.gated):
            await self.gate.wait()
        if model in self.failing:
            raise ModelLoadFailed(f"Triton could not load {model}")
        self.served[model] = set(artifacts)

    async def warm(self, model: str, widths) -> None:
        return None


class Artifacts:
    def read(self, sha256: str) -> bytes:
        return sha256.encode()


class Publisher:
    async def publish(self, change) -> None:
        return None


def with_policy(database: Database, versions: list[int], *, stable: int = 1, canary: int | None = None) -> str:
    """A new model with ``versions`` and a policy naming ``stable`` (and ``canary``); its name."""
    name = f"m-{uuid.uuid4().hex[:10]}"
    with database._sessions.begin() as session:
        model = repository.add_model(session, name=name, description="", gates={})
        for version in versions:
            repository.add_version(session, model=model, version=version, sha256=f"{name}-{version}", size_bytes=1,
                                   status="registered", signature=SIGNATURE, metrics={}, lineage={},
                                   reference_profile={}, description="")
        repository.save_policy(session, model=model, stable=stable, canary=canary,
                               canary_percent=10.0 if canary else 0.0, shadow=None, previous_stable=None,
                               previous_stable_until=None, revision=repository.next_policy_revision(session))
    return name


def controller(database: Database, triton: ScriptedTriton, *, grace_s: float = 0.0,
               clock=time.monotonic) -> TrafficController:
    return TrafficController(database=database, artifacts=Artifacts(), triton=triton, publisher=Publisher(),
                             metrics=RegistryMetrics.create(CollectorRegistry()), previous_stable_retention_s=600,
                             unneeded_grace_s=grace_s, clock=clock)


async def test_a_model_that_fails_to_load_does_not_stop_the_others(database):
    broken, first, second = (with_policy(database, [1]) for _ in range(3))
    triton = ScriptedTriton(failing={broken})
    reloaded = await controller(database, triton).reconcile()
    assert set(reloaded) >= {first, second} and broken not in reloaded
    assert triton.served[first] == triton.served[second] == {1}
    assert (broken, [1]) in triton.loads, "it was tried, and is tried again next pass"


async def test_a_policy_changed_while_reconcile_waited_for_the_model_is_not_undone(database):
    """The change loads v3 beside {1, 2} while reconcile, holding the plan of {1, 2}, waits for the model: once it
    gets the model, it must judge the policy as it is then ({1, 3}), not reload v2 and drop v3."""
    model = with_policy(database, [1, 2, 3], canary=2)
    gate = asyncio.Event()
    triton = ScriptedTriton(gate=gate)
    triton.served[model] = {1, 2}
    traffic = controller(database, triton)
    change = asyncio.create_task(traffic.set(model=model, update=TrafficUpdate(stable=1, canary=3, canary_percent=10),
                                             actor="test"))
    while not triton.loads:
        await asyncio.sleep(0.01)
    reconciling = asyncio.create_task(traffic.reconcile())
    await asyncio.sleep(0.5)  # reconcile reads every plan (v2 still the canary), then waits for the model
    gate.set()
    assert (await change).canary == 3
    assert model in await reconciling
    # (PostgreSQL holds other models): made before broken, then the canary it replaced unloaded
    assert [load for load in triton.loads if load[0] == model] == [(model, [1, 2, 3]), (model, [1, 3])]
    assert triton.served[model] == {1, 3}


async def test_a_change_refused_after_its_load_leaves_the_current_policy_served(database):
    model = with_policy(database, [1, 2, 3], canary=2)
    triton = ScriptedTriton()
    triton.served[model] = {1, 2}
    traffic = controller(database, triton)

    def refuse(session, before):
        raise RuntimeError("refused after the load")

    update = TrafficUpdate(stable=1, canary=3, canary_percent=10)
    with pytest.raises(RuntimeError):
        await traffic.apply(model=model, update=update, actor="test", then=refuse)
    assert triton.served[model] == {1, 2, 3}, "v2, which the policy still routes to, is still served"
    assert model in await traffic.reconcile()
    assert triton.served[model] == {1, 2}, "and v3, which no policy names, is unloaded by the next pass"


async def test_a_version_no_policy_needs_is_unloaded_by_the_next_pass(database):
    """Whatever left it served (a rollback, a rollout's end, a registry that restarted before unloading it)."""
    left = with_policy(database, [1, 2])
    named = with_policy(database, [1, 2], canary=2)
    triton = ScriptedTriton()
    triton.served[left] = triton.served[named] = {1, 2}
    traffic = controller(database, triton)
    reloaded = await traffic.reconcile()
    assert left in reloaded and named not in reloaded
    assert triton.served[left] == {1} and triton.served[named] == {1, 2}
    assert left not in await traffic.reconcile(), "once unloaded, it is in step"


async def test_a_rollouts_end_is_a_policy_write_and_the_canary_it_left_is_unloaded_next_pass(database):
    model = with_policy(database, [1, 2], canary=2)
    triton = ScriptedTriton()
    triton.served[model] = {1, 2}
    traffic = controller(database, triton)
    back = await traffic.set(model=model, update=TrafficUpdate(stable=1), actor="test")
    assert (back.stable, back.canary) == (1, None)
    assert triton.loads == [], "the switch waited for no load"
    assert model in await traffic.reconcile()
    assert triton.served[model] == {1}


async def test_an_unneeded_version_stays_loaded_for_its_grace_and_a_reload_meanwhile_keeps_it(database):
    """The grace covers another replica that loaded a version for a change it has not written yet, and gateways
    that missed the change that left it."""
    now = [1000.0]
    model = with_policy(database, [1, 2, 3])
    triton = ScriptedTriton()
    triton.served[model] = {1, 2}
    traffic = controller(database, triton, grace_s=60, clock=lambda: now[0])
    assert model not in await traffic.reconcile(), "first seen unneeded: kept"
    now[0] += 30
    triton.served[model] = {2}  # Triton lost v1 (restarted, say) while v2 is still within its grace
    assert model in await traffic.reconcile()
    assert triton.served[model] == {1, 2}, "the reload for v1 kept v2"
    now[0] += 29
    assert model not in await traffic.reconcile()
    now[0] += 2
    assert model in await traffic.reconcile()
    assert triton.served[model] == {1}, "unloaded once unneeded for the whole grace"

    triton.served[model] = {1, 3}
    assert model not in await traffic.reconcile()
    now[0] += 50
    with database._sessions.begin() as session:  # v3 becomes the canary: needed again, its grace starts over
        registered = repository.get_model(session, name=model)
        repository.save_policy(session, model=registered, stable=1, canary=3, canary_percent=10.0, shadow=None,
                               previous_stable=None, previous_stable_until=None,
                               revision=repository.next_policy_revision(session))
    assert model not in await traffic.reconcile()
    with database._sessions.begin() as session:
        registered = repository.get_model(session, name=model)
        repository.save_policy(session, model=registered, stable=1, canary=None, canary_percent=0.0, shadow=None,
                               previous_stable=None, previous_stable_until=None,
                               revision=repository.next_policy_revision(session))
    now[0] += 30
    assert model not in await traffic.reconcile(), "unneeded again 0 s ago, not 80"


async def test_a_policy_written_on_one_replica_waits_for_another_replicas_reconcile_load(postgres_url):
    """Replica B's reconcile loads the plan {2} (v1 unneeded past its grace) on Triton; meanwhile replica A sets stable
    v1. A saw v1 served and skipped its load, so B's load, finishing after A's write, left Triton without the
    version every request was now routed to. A must wait for B's load, then load v1 itself."""
    database = Database(postgres_url)
    database.migrate()
    try:
        model = with_policy(database, [1, 2], stable=2)
        gate = asyncio.Event()
        triton = ScriptedTriton(gate=gate, gated={model})  # the session's other models load at once
        triton.served[model] = {1, 2}
        replica_a, replica_b = controller(database, triton, grace_s=180), controller(database, triton, grace_s=0)
        reconciling = asyncio.create_task(replica_b.reconcile())
        while not any(load[0] == model for load in triton.loads):
            await asyncio.sleep(0.01)
        change = asyncio.create_task(replica_a.set(model=model, update=TrafficUpdate(stable=1), actor="alice"))
        await asyncio.sleep(0.5)
        assert not change.done(), "A wrote its policy while B's load of an older plan was in flight"
        gate.set()
        assert (await change).stable == 1 and model in await reconciling
        assert 1 in triton.served[model], triton.loads
    finally:
        database.dispose()


async def test_a_cancelled_wait_for_the_fleet_wide_lock_leaves_it_free(postgres_url):
    """A replica stopping while it waits (shutdown cancels its reconcile loop) must not take the lock with it into the
    connection pool: every replica would then wait for good."""
    one, other = Database(postgres_url), Database(postgres_url)
    try:
        async with one.exclusive("test-lock"):
            waiter = asyncio.create_task(enter_and_leave(other))
            await asyncio.sleep(0.3)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        async with asyncio.timeout(5):
            await enter_and_leave(one)
            await enter_and_leave(other)
    finally:
        one.dispose()
        other.dispose()


async def enter_and_leave(database: Database) -> None:
    async with database.exclusive("test-lock"):
        pass


class StartingTriton(ScriptedTriton):
    """Unreachable for its first ``down_for`` questions, as a Triton that starts beside the registry."""

    def __init__(self, down_for: int) -> None:
        super().__init__()
        self.down_for = down_for
        self.asked: Counter[str] = Counter()

    async def ready_versions(self, model: str, versions) -> set[int]:
        self.asked[model] += 1
        if self.asked.total() <= self.down_for:
            raise BackendUnavailable("Triton is not answering")
        return await super().ready_versions(model, versions)


async def test_until_triton_first_answers_the_loop_retries_within_a_second_then_every_interval(database):
    model = with_policy(database, [1])
    triton = StartingTriton(down_for=2)
    loop = asyncio.create_task(controller(database, triton).keep_triton_in_step(3600, first_retry_s=0.05))
    try:
        for _ in range(200):
            if triton.served.get(model):
                break
            await asyncio.sleep(0.02)
        assert triton.served.get(model) == {1}, "served once Triton answered, not an hour later"
        asked = triton.asked[model]
        await asyncio.sleep(0.3)
        assert triton.asked[model] == asked, "once in step, the next pass waits for the interval"
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
