"""Real faults on a whole fleet: Triton SIGKILLed mid-load, the registry down, Redis stopped and restarted.

A fleet of this module's own (its own embedded Redis, a 1 s registry reconcile loop), since these
tests kill its processes. Every answer must come within a generous bound, as 200 or as 503
problem+json: never a 500, never a hang. Failed requests and recovery times are printed and
merged into ``reliability.json`` (:func:`tests.results.results_file`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, UTC

import httpx
import pytest
import redis

from mlfleet.demo.data import generate_dataset
from mlfleet.demo.run import MODEL, run_demo, sample_instances
from mlfleet.fleet import Child, Fleet, FleetConfig
from mlfleet.runtime.processes import free_port
from mlfleet.runtime.redis_server import start_redis
from services.common.redis import PREDICTIONS_STREAM
from services.gateway.settings import GatewaySettings
from tests.reliability.conftest import (PORTS, LoadDriver, LoadReport, events_produced, events_settled, gateway_metric,
                                        record_reliability)

PROBLEM_JSON = "application/problem+json"
ANSWER_BOUND_S = 2 * GatewaySettings().inference_timeout_s + 1
"""No answer may take longer, fault or not (2× the gateway's inference deadline + 1 s)."""
RECOVERY_BOUND_S = 60.0


@pytest.fixture(scope="module")
def fault_fleet(tmp_path_factory) -> Iterator[Fleet]:
    """The demo fleet with an embedded Redis of its own (a free port nothing answers on) and a 1 s reconcile loop."""
    config = FleetConfig(home=tmp_path_factory.mktemp("faults"), redis_url=f"redis://127.0.0.1:{free_port()}/0",
                         registry_reconcile_interval_s=1.0, **{f"{name}_port": free_port() for name in PORTS})
    with Fleet(config, echo=lambda message: None) as fleet:
        assert fleet.embedded_redis is not None
        summary = run_demo(config, seed=7, shift=False, requests=50, canary_percent=10.0, echo=lambda message: None)
        assert summary.errors == 0
        yield fleet


@pytest.fixture(scope="module")
def instances() -> list[dict]:
    return sample_instances(generate_dataset(seed=7, shift=False), 200, seed=11)


def child(fleet: Fleet, name: str) -> Child:
    return next(c for c in fleet.children if c.name == name)


def sigkill(process) -> None:
    """SIGKILL the whole process group (children run in their own), then reap it."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def wait_for(predicate, *, timeout_s: float, what: str) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s:.0f}s"
        time.sleep(0.1)
    return time.monotonic() - started


def status_of(url: str, **kwargs) -> int:
    try:
        return httpx.request(kwargs.pop("method", "GET"), url, timeout=ANSWER_BOUND_S, **kwargs).status_code
    except httpx.HTTPError:
        return -1


def predict_ok(fleet: Fleet, instance: dict) -> bool:
    body = {"instances": [instance], "routing_key": str(instance["user_id"])}
    return status_of(f"{fleet.config.url('gateway')}/v1/models/{MODEL}/predict", method="POST", json=body) == 200


def assert_clean_failures(report: LoadReport, *, allowed: set[int]) -> None:
    """Every answer within the bound; every status in ``allowed``; every non-200 a problem+json."""
    slow = [a for a in report.answers if a.seconds > ANSWER_BOUND_S]
    assert not slow, f"{len(slow)} answers slower than {ANSWER_BOUND_S}s, slowest {report.slowest_s():.1f}s"
    assert set(report.statuses()) <= allowed, f"statuses {dict(report.statuses())}, allowed {sorted(allowed)}"
    not_problems = [a for a in report.failed() if not a.content_type.startswith(PROBLEM_JSON)]
    assert not not_problems, f"{len(not_problems)} failures without a problem+json body: {not_problems[:3]}"


def test_triton_sigkill_mid_load_fails_fast_and_recovers_on_its_own(fault_fleet, instances):
    gateway = fault_fleet.config.url("gateway")
    triton = child(fault_fleet, "triton")
    load = LoadDriver(gateway, instances, concurrency=4, max_requests=20_000, max_seconds=RECOVERY_BOUND_S + 20)
    load.start()
    load.wait_for_answers(40)
    assert load.report.answers and not load.report.failed(), "the fleet must serve before the fault"

    killed_at = time.monotonic()
    sigkill(triton.process)
    wait_for(lambda: status_of(f"{gateway}/readyz") == 503, timeout_s=10, what="gateway /readyz turning 503")
    wait_for(lambda: any(a.status == 503 for a in load.report.since(killed_at)), timeout_s=10,
             what="a 503 under load after the kill")

    restarted_at = time.monotonic()
    fault_fleet.supervise_once()
    assert triton.restarts == 1 and triton.process.poll() is None
    wait_for(lambda: any(a.status == 200 for a in load.report.since(restarted_at)),
             timeout_s=RECOVERY_BOUND_S, what="serving resumed under load")
    recovery_s = time.monotonic() - killed_at
    time.sleep(1.0)
    report = load.finish()

    failed = report.failed()
    print(f"\ntriton SIGKILL: {len(report.answers)} requests, {len(failed)} failed {dict(report.statuses())}, "
          f"recovered in {recovery_s:.1f}s, slowest answer {report.slowest_s():.2f}s")
    record_reliability("triton_sigkill", {
        "requests": len(report.answers), "failed_requests": len(failed), "statuses": dict(report.statuses()),
        "recovery_s": round(recovery_s, 2), "slowest_answer_s": round(report.slowest_s(), 3),
        "answer_bound_s": ANSWER_BOUND_S, "reconcile_interval_s": fault_fleet.config.registry_reconcile_interval_s,
    })
    assert failed, "killing Triton under load failed no request: the fault did not happen"
    assert_clean_failures(report, allowed={200, 503})
    wait_for(lambda: status_of(f"{gateway}/readyz") == 200, timeout_s=10, what="gateway /readyz back to 200")
    assert all(predict_ok(fault_fleet, instance) for instance in instances[:20])


def test_registry_down_the_gateway_keeps_serving_the_last_policy(fault_fleet, instances):
    config = fault_fleet.config
    gateway, registry = config.url("gateway"), config.url("registry")
    admin = {"Authorization": f"Bearer {config.admin_key()}"}
    sigkill(child(fault_fleet, "registry").process)
    assert status_of(f"{registry}/v1/models", headers=admin) == -1  # a dead process: connection refused

    # Longer than the gateway's policy poll, so it also meets the dead registry there.
    poll_s = GatewaySettings().policy_poll_s
    load = LoadDriver(gateway, instances, concurrency=4, max_requests=20_000, max_seconds=poll_s + 1.5)
    load.start()
    load.join(poll_s + 30)
    report = load.report
    print(f"\nregistry down: {len(report.answers)} predictions {dict(report.statuses())}")
    assert report.answers and report.statuses() == {200: len(report.answers)}
    assert report.slowest_s() <= ANSWER_BOUND_S
    assert status_of(f"{gateway}/readyz") == 200  # the routing table it holds is enough to serve

    # Pinning a version needs the registry to check the key: a clean 503, not a 500 or a hang.
    pinned = httpx.post(f"{gateway}/v2/models/{MODEL}/versions/1/infer", json={"inputs": []}, headers=admin,
                        timeout=ANSWER_BOUND_S)
    assert pinned.status_code == 503 and pinned.headers["content-type"].startswith(PROBLEM_JSON), pinned.text
    assert pinned.json()["status"] == 503

    fault_fleet.supervise_once()
    wait_for(lambda: status_of(f"{registry}/readyz") == 200, timeout_s=RECOVERY_BOUND_S, what="registry back")
    assert status_of(f"{registry}/v1/models", headers=admin) == 200
    record_reliability("registry_down", {"requests": len(report.answers), "failed_requests": len(report.failed())})


def test_redis_stopped_feature_lookups_time_out(fault_fleet, instances):
    """A Redis that accepts connections but does not answer (SIGSTOP) is slow, not down: lookups end at the
    gateway's feature deadline as 504, then serving resumes once it answers again (SIGCONT)."""
    gateway = fault_fleet.config.url("gateway")
    body = {"instances": [instances[0]], "routing_key": str(instances[0]["user_id"])}
    os.killpg(fault_fleet.embedded_redis.pid, signal.SIGSTOP)
    try:
        stalled = [httpx.post(f"{gateway}/v1/models/{MODEL}/predict", json=body, timeout=ANSWER_BOUND_S)
                   for _ in range(3)]
    finally:
        os.killpg(fault_fleet.embedded_redis.pid, signal.SIGCONT)
    print(f"\nredis stopped: statuses {[r.status_code for r in stalled]}, "
          f"slowest {max(r.elapsed.total_seconds() for r in stalled):.2f}s")
    for response in stalled:
        assert response.status_code == 504 and response.headers["content-type"].startswith(PROBLEM_JSON), response.text
        assert response.json()["status"] == 504
    wait_for(lambda: predict_ok(fault_fleet, instances[0]), timeout_s=RECOVERY_BOUND_S, what="serving after SIGCONT")
    # Leave the event writer idle for the restart test: what it held while Redis was stopped is written or dropped.
    wait_for(lambda: events_settled(gateway), timeout_s=RECOVERY_BOUND_S, what="events settled after SIGCONT")


def test_redis_restart_events_are_dropped_never_block_and_resume(fault_fleet, instances):
    config = fault_fleet.config
    gateway = config.url("gateway")
    port = int(config.redis_url.rsplit(":", 1)[1].split("/")[0])
    events = {name: f"mlfleet_gateway_events_{name}_total" for name in ("enqueued", "written", "dropped")}
    before = {name: gateway_metric(gateway, metric) for name, metric in events.items()}
    produced_before = events_produced(gateway)
    dropped_before = before["dropped"]

    sigkill(fault_fleet.embedded_redis)
    load = LoadDriver(gateway, instances, concurrency=4, max_requests=20_000, max_seconds=4)
    load.start()
    load.join(40)
    outage = load.report
    wait_for(lambda: gateway_metric(gateway, "mlfleet_gateway_events_dropped_total") > dropped_before,
             timeout_s=10, what="events counted as dropped")
    dropped = gateway_metric(gateway, "mlfleet_gateway_events_dropped_total") - dropped_before
    failures = sorted(a.seconds for a in outage.failed())
    median_failure_s = failures[len(failures) // 2] if failures else 0.0
    print(f"\nredis down: {len(outage.answers)} predictions {dict(outage.statuses())}, "
          f"median failure {median_failure_s * 1000:.1f}ms, slowest {outage.slowest_s():.2f}s, "
          f"{dropped:.0f} events counted as dropped")
    assert outage.answers and outage.failed()
    # A refused connection fails the lookup at once (Feast's Redis client does not retry it): a clean 503,
    # never the 504 of a Redis that is slow (test above).
    assert_clean_failures(outage, allowed={200, 503})

    restarted_at = time.monotonic()
    fault_fleet.embedded_redis = start_redis(port, config.home / "redis")
    # The restarted Redis is empty: put the features back, as an operator would.
    end = datetime.now(UTC) + timedelta(minutes=1)
    response = httpx.post(f"{config.url('features')}/v1/materialize", timeout=120,
                          json={"start": (end - timedelta(days=3650)).isoformat(), "end": end.isoformat()},
                          headers={"Authorization": f"Bearer {config.admin_key()}"})
    assert response.status_code == 200, response.text
    wait_for(lambda: predict_ok(fault_fleet, instances[0]), timeout_s=RECOVERY_BOUND_S,
             what="predictions after Redis returned")
    recovery_s = time.monotonic() - restarted_at  # restart, re-materialization and the first 200
    after = [predict_ok(fault_fleet, instance) for instance in instances[:20]]
    assert all(after)
    # The writer may still be draining what it queued during the outage: count once every event is accounted for.
    wait_for(lambda: events_settled(gateway), timeout_s=RECOVERY_BOUND_S, what="events written or dropped")
    stream = redis.Redis.from_url(config.redis_url)
    try:
        reached = stream.xlen(PREDICTIONS_STREAM)
    finally:
        stream.close()
    delta = {name: gateway_metric(gateway, metric) - before[name] for name, metric in events.items()}
    produced = int(events_produced(gateway) - produced_before)  # queued, or dropped at a full queue
    lost = produced - reached  # the restarted stream holds only what was written after the restart
    print(f"redis back: serving again {recovery_s:.1f}s after the restart; {produced} events made, "
          f"{delta['enqueued']:.0f} queued, {reached} reached the new stream, {lost} lost, "
          f"{delta['dropped']:.0f} counted as dropped")
    record_reliability("redis_restart", {
        "outage_requests": len(outage.answers), "outage_statuses": dict(outage.statuses()),
        "outage_median_failure_s": round(median_failure_s, 4),
        "events_made": produced, "events_queued": int(delta["enqueued"]), "events_reached_stream": reached,
        "events_lost": lost,
        "events_counted_dropped": int(delta["dropped"]), "slowest_answer_s": round(outage.slowest_s(), 3),
        "recovery_s": round(recovery_s, 2),
    })
    assert reached >= len(after)
    assert delta["dropped"] >= 1
    assert lost == delta["dropped"], "every lost event is counted as dropped"
    assert status_of(f"{gateway}/readyz") == 200
