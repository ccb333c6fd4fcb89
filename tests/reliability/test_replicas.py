"""Two gateways and two monitors at once, on one fleet: every prediction is counted exactly once, and a
traffic change reaches both gateways.

The demo fleet's gateway and monitor plus one more of each, started with the same settings (a second
gateway on the same registry, Triton, Redis and Feast; a second monitor in the same consumer group under
another consumer name). Counts are before/after differences, so the fixture's own traffic does not matter.
Figures are printed and merged into ``reliability.json`` under ``replicas`` (:func:`tests.results.results_file`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import httpx
import pytest

from mlfleet.demo.data import generate_dataset
from mlfleet.demo.run import MODEL, sample_instances
from mlfleet.fleet import Fleet
from mlfleet.runtime.services import env_name
from tests.conftest import ServiceProcess, start_service
from tests.reliability.conftest import events_settled, gateway_metric, merge_reliability, record_reliability

pytestmark = pytest.mark.timeout(600)  # the fleet it starts first (demo_fleet) can take minutes on a busy machine

PREDICTIONS = 400
CONCURRENCY = 8
SETTLE_BOUND_S = 60.0
CONVERGENCE_BOUND_S = 15.0
"""Generous: policy changes are pushed (pub/sub) and each gateway also polls every ``policy_poll_s`` (5 s)."""
WINDOW_S = 3600
STARTUP_BOUND_S = 180.0


def fleet_settings(fleet: Fleet, service: str) -> dict[str, str]:
    """The settings the fleet gives ``service`` (field → value), less its port: what a replica of it needs."""
    prefix = env_name(service, "")
    settings = {key[len(prefix):].lower(): value for key, value in fleet.service_env(service).items()
                if key.startswith(prefix)}
    settings.pop("port", None)
    return settings


@pytest.fixture(scope="module")
def replicas(demo_fleet, tmp_path_factory) -> Iterator[dict[str, list[str]]]:
    """Base URLs of the two gateways and the two monitors (the fleet's first, then the extra replica)."""
    workdir = tmp_path_factory.mktemp("replicas")
    monitor = fleet_settings(demo_fleet, "monitor") | {"consumer_name": "monitor-replica-b"}
    with ThreadPoolExecutor(max_workers=2) as pool:  # both start at once: each takes a while on a busy machine
        starting = [pool.submit(start_service, "gateway", fleet_settings(demo_fleet, "gateway"), workdir,
                                timeout_s=STARTUP_BOUND_S),
                    pool.submit(start_service, "monitor", monitor, workdir, timeout_s=STARTUP_BOUND_S)]
    started: list[ServiceProcess] = [f.result() for f in starting if f.exception() is None]
    try:
        for future in starting:
            future.result()  # re-raise a replica that did not start, after the others are stopped below
        gateway, monitor_b = started
        config = demo_fleet.config
        yield {"gateway": [config.url("gateway"), gateway.url], "monitor": [config.url("monitor"), monitor_b.url]}
    finally:
        for replica in started:
            replica.stop()


def version_requests(monitor: str) -> Counter:
    """Requests per version of the demo model the monitor counted over the last hour."""
    response = httpx.get(f"{monitor}/v1/models/{MODEL}/metrics", params={"window_s": WINDOW_S}, timeout=5)
    if response.status_code == 404:  # no event of the model yet
        return Counter()
    assert response.status_code == 200, response.text
    return Counter({v["version"]: v["requests"] for v in response.json()["versions"]})


def consumer_stats(monitor: str) -> dict:
    response = httpx.get(f"{monitor}/v1/stats", timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def stream_consumed(monitor: str) -> bool:
    """The group has been handed the newest entry and every entry handed out is acknowledged (counted)."""
    stats = consumer_stats(monitor)
    return stats["pending"] == 0 and stats["lag_s"] == 0


def wait_until_quiet(urls: dict[str, list[str]]) -> None:
    """Both gateways wrote what they queued, and the monitors counted all of it."""
    deadline = time.monotonic() + SETTLE_BOUND_S
    while not (all(events_settled(g) for g in urls["gateway"]) and stream_consumed(urls["monitor"][0])):
        assert time.monotonic() < deadline, f"events not written and counted within {SETTLE_BOUND_S:.0f}s"
        time.sleep(0.2)


async def predict_across(gateways: list[str], instances: list[dict]) -> Counter:
    """One prediction per instance, spread over ``gateways`` in turn; the version that answered each."""
    answered: Counter = Counter()
    queue: asyncio.Queue = asyncio.Queue()
    for n, instance in enumerate(instances):
        queue.put_nowait((gateways[n % len(gateways)], instance))

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            gateway, instance = queue.get_nowait()
            body = {"instances": [instance], "routing_key": str(instance["user_id"])}
            async with session.post(f"{gateway}/v1/models/{MODEL}/predict", json=body) as response:
                payload = await response.json(content_type=None)
                assert response.status == 200, payload
            answered[payload["version"]] += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    return answered


def served_revision(gateway: str) -> tuple[int, dict]:
    """The demo model's policy revision on ``gateway`` and its route."""
    routes = httpx.get(f"{gateway}/v1/routes", timeout=5).json()
    route = next(m for m in routes["table"]["models"] if m["model"] == MODEL)
    return route["revision"], route


def test_two_gateways_two_monitors_count_each_prediction_once(demo_fleet, replicas):
    gateways, monitors = replicas["gateway"], replicas["monitor"]
    instances = sample_instances(generate_dataset(seed=7, shift=False), PREDICTIONS, seed=23)
    wait_until_quiet(replicas)
    counted_before = version_requests(monitors[0])
    processed_before = [consumer_stats(m)["processed_by_this_consumer"] for m in monitors]
    dropped_before = sum(gateway_metric(g, "mlfleet_gateway_events_dropped_total") for g in gateways)

    answered = asyncio.run(predict_across(gateways, instances))
    wait_until_quiet(replicas)

    counted = [version_requests(m) - counted_before for m in monitors]
    processed = [consumer_stats(m)["processed_by_this_consumer"] - before for m, before in zip(monitors, processed_before)]
    dropped = sum(gateway_metric(g, "mlfleet_gateway_events_dropped_total") for g in gateways) - dropped_before
    consumers = consumer_stats(monitors[1])
    print(f"\nreplicas: {PREDICTIONS} predictions over 2 gateways, answered per version {dict(answered)}; "
          f"monitors counted {dict(counted[0])} / {dict(counted[1])}; processed per monitor {processed}; "
          f"{dropped:.0f} events dropped")
    record_reliability("replicas", {
        "predictions_sent": PREDICTIONS, "answered_per_version": {str(v): n for v, n in sorted(answered.items())},
        "counted_per_version": {str(v): n for v, n in sorted(counted[0].items())},
        "processed_per_monitor": processed, "events_dropped": int(dropped),
    })
    assert sum(answered.values()) == PREDICTIONS
    assert dropped == 0
    assert counted[0] == answered, "each prediction counted exactly once, under the version that answered it"
    assert counted[1] == counted[0], "both monitors read the same aggregates"
    assert sum(processed) == PREDICTIONS, "the two consumers of the group split the events, none twice"
    assert all(n > 0 for n in processed), f"each monitor takes a share of the stream: {processed}"
    assert consumers["consumer"] == "monitor-replica-b" and consumers["consumers"] >= 2


def test_a_traffic_change_reaches_both_gateways(demo_fleet, replicas):
    gateways = replicas["gateway"]
    admin = {"Authorization": f"Bearer {demo_fleet.config.admin_key()}"}
    registry = demo_fleet.config.url("registry")
    traffic = httpx.get(f"{registry}/v1/models/{MODEL}/traffic", headers=admin, timeout=10).json()
    assert {served_revision(g)[0] for g in gateways} == {traffic["revision"]}, "both start on the same revision"

    changed_at = time.monotonic()
    update = {"stable": traffic["stable"], "canary": traffic["canary"], "canary_percent": 25.0}
    response = httpx.put(f"{registry}/v1/models/{MODEL}/traffic", json=update, headers=admin, timeout=30)
    assert response.status_code == 200, response.text
    revision = response.json()["revision"]
    assert revision > traffic["revision"]

    converged_s: list[float] = []
    for gateway in gateways:
        while served_revision(gateway)[0] < revision:
            assert time.monotonic() - changed_at < CONVERGENCE_BOUND_S, \
                f"{gateway} still serves revision {served_revision(gateway)[0]} < {revision}"
            time.sleep(0.02)
        converged_s.append(time.monotonic() - changed_at)
    routes = [served_revision(g) for g in gateways]
    print(f"\nreplicas: traffic change to revision {revision} served by both gateways after "
          f"{', '.join(f'{s:.3f}s' for s in converged_s)} (from the registry's request)")
    merge_reliability("replicas", {"policy_revision": revision,
                                   "policy_convergence_s": [round(s, 3) for s in converged_s]})
    assert routes[0] == routes[1], "both gateways serve the same route"
    assert routes[0][0] == revision and routes[0][1]["canary_percent"] == 25.0
