"""Concurrent admin calls on two registry replicas sharing one PostgreSQL database and one Triton end in one
consistent state; a tampered artifact is refused, counted and audited; SQLite serialises concurrent writes.

Races are made certain, not hoped for: the test holds the model's row lock while it fires the calls, waits
until a call of each replica is queued on that lock (every call has read the state it acts on by then),
and lets go. Rollouts use an interval of an hour, so the controller never judges them meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import httpx
import psycopg
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from mlfleet.runtime.processes import free_port, wait_until
from services.common.errors import PROBLEM_JSON
from services.registry.database import Database
from services.registry.errors import ArtifactCorrupted
from services.registry.models import POLICY_REVISION_COUNTER, RevisionCounter
from services.registry.settings import RegistrySettings
from tests.conftest import ServiceProcess, start_service, write_key_file
from tests.gateway.conftest import bearer, register, train_onnx
from tests.registry.factories import model_name, train_classifier, upload_parts, version_metadata
from tests.registry.harness import running_registry

ROLLOUT = {"steps": [10, 50], "interval_s": 3600, "min_requests": 5}
ENDED = {"rollout.promote", "rollout.rollback", "rollout.abort"}


@dataclass(frozen=True)
class Replicas:
    a: ServiceProcess
    b: ServiceProcess
    database_url: str
    artifacts_dir: Path
    key: str

    def call(self, replica: ServiceProcess, method: str, path: str, **kwargs) -> Callable[[], httpx.Response]:
        return lambda: httpx.request(method, f"{replica.url}{path}", headers=bearer(self.key), timeout=60, **kwargs)

    def get(self, path: str, **params) -> dict:
        response = httpx.get(f"{self.a.url}{path}", params=params, headers=bearer(self.key), timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def audit(self, model: str) -> list[dict]:
        """The model's audit events, oldest first."""
        return list(reversed(self.get("/v1/audit", model=model, limit=1000)["data"]))


def libpq(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def race_database_url(postgres_admin_url, postgres_url) -> Iterator[str]:
    """A database of this module's own, so the lock waits it watches are its registries' only."""
    name = f"mlfleet_races_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def replicas(race_database_url, workdir, triton, redis_url, admin_key) -> Iterator[Replicas]:
    """Two registry processes on one PostgreSQL database, one artifact store and one Triton."""
    home = workdir / f"races-{uuid.uuid4().hex[:6]}"
    settings = {
        "database_url": race_database_url, "triton_grpc_url": triton.grpc_url, "redis_url": redis_url,
        "artifacts_dir": home / "artifacts", "monitor_url": f"http://127.0.0.1:{free_port()}",
        "bootstrap_admin_key_file": write_key_file(home / "secrets" / "admin.key", admin_key),
        "reconcile_interval_s": 0.5,
    }
    with ThreadPoolExecutor(2) as pool:
        starting = [pool.submit(start_service, "registry", settings, home / name)
                    for name in ("registry-a", "registry-b")]
    started = [future.result() for future in starting if future.exception() is None]
    try:
        assert len(started) == 2, [str(future.exception()) for future in starting]
        yield Replicas(started[0], started[1], race_database_url, home / "artifacts", admin_key)
    finally:
        for replica in started:
            replica.stop()


@functools.cache
def onnx_of(seed: int) -> bytes:
    return train_onnx(seed)


def deploy(replicas: Replicas, seeds: tuple[int, ...] = (1, 2)) -> str:
    """A new model with a version per seed, stable v1 and v2 shadowed: Triton serves both, so no move reloads it."""
    model = model_name("race")
    artifacts = {version: onnx_of(seed) for version, seed in enumerate(seeds, start=1)}
    policy = {"stable": 1, "shadow": 2} if len(seeds) > 1 else {"stable": 1}
    register(replicas.a.url, model, artifacts, key=replicas.key, **policy)
    return model


def lock_waiters(database_url: str) -> int:
    """Registry writes queued on a model: on its row lock, or on the fleet-wide lock of its Triton loads
    (``services.registry.traffic.triton_lock_name``), which the write queued on the row lock holds. A replica waits
    for that one by polling ``pg_try_advisory_lock`` on a connection of its own: a waiter is such a connection that
    holds no advisory lock. This query's own text names both patterns, so its own backend is left out (counting it
    let the race go with one write queued, and the other call then read the state the first one wrote)."""
    with psycopg.connect(libpq(database_url), autocommit=True) as connection:
        row_waiters, lock_pollers = connection.execute(
            "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock' AND query ILIKE '%FROM models%FOR NO KEY UPDATE%'),"
            " count(*) FILTER (WHERE query ILIKE 'SELECT pg_try_advisory_lock%' AND pid NOT IN"
            "  (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted))"
            " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
        return row_waiters + lock_pollers


def race(replicas: Replicas, model: str, calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Fire ``calls`` at once while the model's row is locked; let go once both replicas queue a write on it."""
    with ThreadPoolExecutor(len(calls)) as pool:
        with psycopg.connect(libpq(replicas.database_url)) as holder:
            holder.execute("SELECT id FROM models WHERE name = %s FOR UPDATE", (model,))
            futures = [pool.submit(call) for call in calls]
            wait_until(lambda: lock_waiters(replicas.database_url) >= 2, timeout_s=30,
                       what="a write of each replica queued on the model's locks")
        return [future.result() for future in futures]


def assert_conflict(response: httpx.Response) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["code"] == "rollout-conflict"


def split(policy: dict) -> tuple:
    return policy["stable"], policy["canary"], policy["canary_percent"], policy["shadow"]


def test_rollouts_started_at_once_on_two_replicas_start_one(replicas):
    model = deploy(replicas)
    starts = [replicas.call(replica, "POST", f"/v1/models/{model}/rollouts", json={"candidate": 2, **ROLLOUT})
              for replica in (replicas.a, replicas.b) * 4]
    answers = race(replicas, model, starts)

    assert sorted(a.status_code for a in answers) == [201] + [409] * 7, [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert_conflict(answer)
    winner = next(a.json() for a in answers if a.status_code == 201)
    active = [r for r in replicas.get(f"/v1/models/{model}/rollouts")["data"] if r["state"] == "running"]
    assert [r["id"] for r in active] == [winner["id"]]
    assert split(replicas.get(f"/v1/models/{model}/traffic")) == (1, 2, 10.0, None)
    actions = [e["action"] for e in replicas.audit(model)]
    assert actions.count("rollout.start") == 1
    assert actions.count("traffic.set") == 2, "the deploy's and the winner's: no loser left a policy change behind"


def test_promote_racing_a_rollback_on_another_replica_ends_one_way(replicas):
    model = deploy(replicas)
    stable, outcomes = 1, []
    for round_ in range(3):
        candidate = 3 - stable
        started = httpx.post(f"{replicas.a.url}/v1/models/{model}/rollouts", headers=bearer(replicas.key),
                             json={"candidate": candidate, **ROLLOUT}, timeout=60)
        assert started.status_code == 201, started.text
        rollout_id = started.json()["id"]
        promoter, roller = (replicas.a, replicas.b) if round_ % 2 == 0 else (replicas.b, replicas.a)
        promote, rollback = race(replicas, model, [
            replicas.call(promoter, "POST", f"/v1/models/{model}/rollouts/{rollout_id}/promote"),
            replicas.call(roller, "POST", f"/v1/models/{model}/rollback", json={"reason": "racing the promote"}),
        ])

        assert sorted([promote.status_code, rollback.status_code]) == [200, 409], (promote.text, rollback.text)
        assert_conflict(promote if promote.status_code == 409 else rollback)
        rollout = replicas.get(f"/v1/models/{model}/rollouts/{rollout_id}")
        traffic = replicas.get(f"/v1/models/{model}/traffic")
        if promote.status_code == 200:
            assert rollout["state"] == "promoted"
            assert (traffic["stable"], traffic["canary"]) == (candidate, None)
            stable = candidate
        else:
            assert rollout["state"] == "rolled_back"
            assert (traffic["stable"], traffic["canary"]) == (stable, None)
            assert rollback.json()["revision"] == traffic["revision"]
        ended = [e["action"] for e in replicas.audit(model)
                 if e["action"] in ENDED and e["detail"]["rollout_id"] == rollout_id]
        assert len(ended) == 1, ended
        outcomes.append(rollout["state"])
    print(f"\npromote vs rollback, {len(outcomes)} races: {outcomes}")


def test_manual_traffic_sets_across_replicas_serialise(replicas):
    model = deploy(replicas)
    wanted = [{"stable": 1, "canary": 2, "canary_percent": p} for p in (5, 10, 20, 30)]
    wanted += [{"stable": 2, "canary": 1, "canary_percent": 40}, {"stable": 2, "shadow": 1}, {"stable": 1},
               {"stable": 2}]
    calls = [replicas.call(replica, "PUT", f"/v1/models/{model}/traffic", json=body)
             for replica, body in zip((replicas.a, replicas.b) * 4, wanted, strict=True)]
    answers = race(replicas, model, calls)

    assert all(a.status_code in (200, 409) for a in answers), [(a.status_code, a.text) for a in answers]
    applied = {a.json()["revision"]: body for a, body in zip(answers, wanted, strict=True) if a.status_code == 200}
    assert len(applied) == sum(a.status_code == 200 for a in answers) > 0, "revisions are unique"
    revisions = [e["detail"]["revision"] for e in replicas.audit(model) if e["action"] == "traffic.set"]
    assert revisions == sorted(set(revisions)), "each write got a higher revision than the one before it"
    final = replicas.get(f"/v1/models/{model}/traffic")
    assert final["revision"] == max(applied) == revisions[-1]
    last = applied[max(applied)]
    assert split(final) == (last["stable"], last.get("canary"), float(last.get("canary_percent", 0)),
                            last.get("shadow"))


def test_a_tampered_artifact_is_refused_counted_and_audited(replicas, triton):
    model = deploy(replicas, seeds=(3,))
    deployed = replicas.get(f"/v1/models/{model}/traffic")
    sha256 = replicas.get(f"/v1/models/{model}/versions/1")["sha256"]
    path = replicas.artifacts_dir / f"{sha256}.onnx"
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-16] + b"tampered-bytes!!")
    unloaded = httpx.post(f"http://{triton.http_url}/v2/repository/models/{model}/unload", timeout=30)
    assert unloaded.status_code == 200, unloaded.text
    before = corrupted_count(replicas.b)

    answer = httpx.put(f"{replicas.b.url}/v1/models/{model}/traffic", json={"stable": 1},
                       headers=bearer(replicas.key), timeout=60)
    assert answer.status_code == ArtifactCorrupted.status, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    assert answer.json()["code"] == "artifact-corrupted"
    assert corrupted_count(replicas.b) >= before + 1
    by_admin = [e for e in replicas.audit(model) if e["action"] == "artifact.corrupted" and e["actor"] != "reconciler"]
    assert [(e["actor"], e["version"], e["detail"]["sha256"], e["detail"]["attempted"]["action"]) for e in by_admin] \
        == [("bootstrap-admin", 1, sha256, "traffic.set")]
    assert replicas.get(f"/v1/models/{model}/traffic")["revision"] == deployed["revision"], "the policy stands"

    counts = {replica.url: corrupted_count(replica) for replica in (replicas.a, replicas.b)}
    wait_until(lambda: all(corrupted_count(r) >= counts[r.url] + 3 for r in (replicas.a, replicas.b)), timeout_s=30,
               what="each replica's reconcile loop refusing the artifact three more times")
    by_reconciler = [e for e in replicas.audit(model)
                     if e["action"] == "artifact.corrupted" and e["actor"] == "reconciler"]
    assert 1 <= len(by_reconciler) <= 2, "the reconcile loop audits an artifact once per process, not every interval"
    assert all(e["detail"]["attempted"]["action"] == "reconcile" for e in by_reconciler)


def corrupted_count(replica: ServiceProcess) -> float:
    text = httpx.get(f"{replica.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mlfleet_registry_artifacts_corrupted_total "))


async def test_concurrent_admin_writes_on_sqlite_never_fail(tmp_path, triton, redis_url, admin_key):
    """One registry on its default SQLite database, admin writes of every kind fired at once: each answers a
    success or 409, never an error (its units of work queue for the database's write lock)."""
    settings = RegistrySettings(home=tmp_path, triton_grpc_url=triton.grpc_url, redis_url=redis_url,
                                monitor_url=f"http://127.0.0.1:{free_port()}", bootstrap_admin_key=SecretStr(admin_key))
    models = [model_name("lite") for _ in range(2)]
    onnx = [train_classifier(seed=seed).onnx for seed in (0, 1)]
    async with running_registry(settings) as client:
        async def at_once(*requests: Awaitable[httpx.Response]) -> list[httpx.Response]:
            answers = await asyncio.gather(*requests)
            failed = [(a.request.method, a.request.url.path, a.status_code, a.text) for a in answers
                      if a.status_code not in (200, 201, 409)]
            assert not failed, failed
            return answers

        await at_once(*(client.post("/v1/models", json={"name": m}) for m in models),
                      *(client.post("/v1/keys", json={"name": f"key-{i}", "role": "viewer"}) for i in range(4)))
        uploads = await at_once(*(client.post(f"/v1/models/{m}/versions", files=upload_parts(data, version_metadata()))
                                  for m in models for data in onnx))
        assert sorted(u.json()["version"] for u in uploads) == [1, 1, 2, 2]
        await at_once(*(client.put(f"/v1/models/{m}/traffic", json={"stable": 1, "shadow": 2}) for m in models))
        answers = await at_once(*(client.post(f"/v1/models/{m}/rollouts", json={"candidate": 2, **ROLLOUT})
                                  for m in models for _ in range(2)),
                                *(client.post("/v1/keys", json={"name": f"key-{i}", "role": "deployer"})
                                  for i in range(4)))
        rollouts = {a.json()["model"]: a.json()["id"] for a in answers[:2 * len(models)] if a.status_code == 201}
        assert sorted(rollouts) == sorted(models)
        await at_once(*(client.post(f"/v1/models/{m}/rollouts/{r}/{action}")
                        for m, r in rollouts.items() for action in ("promote", "abort")),
                      *(client.post(f"/v1/models/{m}/rollback") for m in models))
        ended = [(await client.get(f"/v1/models/{m}/rollouts/{r}")).json()["state"] for m, r in rollouts.items()]
    assert set(ended) <= {"promoted", "aborted", "rolled_back"}


async def test_sqlite_units_of_work_that_read_then_write_never_lose_an_update(tmp_path):
    """The second unit of work starts while the first one, having read the counter, waits for it to read too.
    Both read-modify-write it: unless each is one transaction holding the write lock from its start (``BEGIN
    IMMEDIATE``), both read 0 and the counter ends at 1."""
    database = Database(f"sqlite:///{tmp_path / 'registry.db'}")
    await anyio.to_thread.run_sync(database.migrate)
    first_read, second_read = threading.Event(), threading.Event()

    def increment(session: Session, *, read: threading.Event, then_wait_for: threading.Event | None) -> int:
        counter = session.get(RevisionCounter, POLICY_REVISION_COUNTER)
        read.set()
        if then_wait_for is not None:
            then_wait_for.wait(timeout=1)  # not set in time when the second unit of work waits for this one
        counter.value += 1
        session.flush()
        return counter.value

    async def second() -> int:
        assert await anyio.to_thread.run_sync(first_read.wait, 10)
        return await database.transaction(increment, read=second_read, then_wait_for=None)

    try:
        values = await asyncio.gather(database.transaction(increment, read=first_read, then_wait_for=second_read),
                                      second())
    finally:
        database.dispose()
    assert sorted(values) == [1, 2]
