"""Rollback propagation: from the admin's ``POST /v1/models/{model}/rollback`` to every gateway serving the
new policy. ``make bench-rollback`` (or ``python -m benchmarks.rollback``).

Starts the fleet on embedded defaults plus extra gateways, registers two small versions of a
model (request inputs only, so no feature data is needed), makes v2 stable with v1 kept loaded,
then rolls back to v1, makes v2 stable again and waits until every gateway serves it (untimed),
and so on. Each round times the admin call and, for every gateway, the moment it swapped in the
rolled-back policy (its ``/v1/routes`` ``loaded_at``). The figures go to
``benchmarks/results/rollback-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from benchmarks import RESULTS
from mlfleet.fleet import Fleet, FleetConfig
from mlfleet.runtime.processes import free_port, http_ok, start_process, stop_process, wait_until
from mlfleet.runtime.services import service_argv

MODEL = "rollback-bench"
POLL_S = 0.005


def small_onnx(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] + rng.normal(0, 0.5, 200) > 0).astype(int))
    return to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17).SerializeToString()


def prepare(registry: httpx.Client) -> None:
    """The model with two versions, v2 stable and v1 kept loaded for rollback."""
    created = registry.post("/v1/models", json={"name": MODEL, "gates": {"min_auc": None, "min_accuracy": None}})
    if created.status_code != 409:
        created.raise_for_status()
    signature = {"inputs": [{"name": f"x{i}", "source": "request"} for i in range(3)]}
    versions = registry.get(f"/v1/models/{MODEL}/versions").json()["count"]
    for seed in range(versions, 2):
        response = registry.post(f"/v1/models/{MODEL}/versions", files={"artifact": ("model.onnx", small_onnx(seed))},
                                 data={"metadata": json.dumps({"signature": signature})})
        response.raise_for_status()
    for stable in (1, 2):
        registry.put(f"/v1/models/{MODEL}/traffic", json={"stable": stable}).raise_for_status()


async def serving(client: httpx.AsyncClient, gateway: str, revision: int, timeout_s: float) -> dict:
    """``gateway``'s ``/v1/routes`` once it serves ``revision`` or later."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        routes = (await client.get(f"{gateway}/v1/routes")).json()
        if routes["revision"] >= revision:
            return routes
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"{gateway} did not serve revision {revision} within {timeout_s} s")


async def settle_on_v2(client: httpx.AsyncClient, auth: dict[str, str], gateways: list[str]) -> None:
    """Make v2 stable (v1 kept loaded as the previous stable) unless it is, and wait until every gateway serves
    that."""
    traffic = (await client.get(f"/v1/models/{MODEL}/traffic", headers=auth)).raise_for_status().json()
    if traffic["stable"] != 2:
        response = await client.put(f"/v1/models/{MODEL}/traffic", headers=auth, json={"stable": 2})
        traffic = response.raise_for_status().json()
    await asyncio.gather(*(serving(client, g, traffic["revision"], 30) for g in gateways))


async def one_rollback(client: httpx.AsyncClient, auth: dict[str, str],
                       gateways: list[str]) -> tuple[float, list[float]]:
    """Time of the admin call and of each gateway serving its result. A gateway's time is when it swapped the new
    table in (its ``loaded_at``, the same host's clock) less when the call was sent: it is read once the call has
    answered, so polling the gateways neither competes with the call for the cores nor rounds the figure to its
    interval."""
    sent_at, started = time.time(), time.perf_counter()
    response = await client.post(f"/v1/models/{MODEL}/rollback", headers=auth, json={"reason": "benchmark"})
    response.raise_for_status()
    call_s = time.perf_counter() - started
    revision = response.json()["revision"]
    routes = await asyncio.gather(*(serving(client, g, revision, 10) for g in gateways))
    return call_s, [r["loaded_at"] - sent_at for r in routes]


async def timed_rollbacks(registry_url: str, auth: dict[str, str], gateways: list[str],
                          rounds: int) -> list[tuple[float, list[float]]]:
    """``rounds`` rollbacks from v2 to v1, each from the same settled state (v2 stable and served by every gateway,
    set up untimed: a rollback goes back to the previous stable only, and a second in a row is refused with 409).
    One client for all of them, its connections already open when a round is timed."""
    timed = []
    async with httpx.AsyncClient(base_url=registry_url, timeout=10) as client:
        for _ in range(rounds):
            await settle_on_v2(client, auth, gateways)
            timed.append(await one_rollback(client, auth, gateways))
    return timed


def start_gateway(fleet: Fleet, port: int):
    env = fleet.service_env("gateway")
    env["MLFLEET_GATEWAY_PORT"] = str(port)
    log_file = fleet.config.logs / f"gateway-{port}.log"
    process = start_process(service_argv("gateway", host=fleet.config.host, port=port), log_file=log_file, env=env)
    wait_until(lambda: http_ok(f"http://{fleet.config.host}:{port}/readyz"), timeout_s=60, what="extra gateway",
               process=process, log_file=log_file)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="Rollbacks to time.")
    parser.add_argument("--gateways", type=int, default=2, help="Gateways that must serve the new policy (≥ 1).")
    args = parser.parse_args()

    config = FleetConfig.from_env(home=Path(".mlfleet/bench-rollback"))
    with Fleet(config) as fleet:
        ports = [free_port() for _ in range(max(args.gateways, 1) - 1)]
        extra = []
        try:
            for port in ports:
                extra.append(start_gateway(fleet, port))
            gateways = [config.url("gateway")] + [f"http://{config.host}:{port}" for port in ports]
            auth = {"Authorization": f"Bearer {config.admin_key()}"}
            with httpx.Client(base_url=config.url("registry"), timeout=120, headers=auth) as registry:
                prepare(registry)
            rounds = asyncio.run(timed_rollbacks(config.url("registry"), auth, gateways, args.rounds))
        finally:
            for process in extra:
                stop_process(process)
    summary = summarise(rounds, len(gateways))
    report(summary)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"rollback-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M:%S"), **summary}, indent=2))
    print(f"Results written to {path}")


def distribution(values_ms: list[float]) -> dict[str, float]:
    """Median, p95 (nearest rank: the smallest value at or above 95 % of them) and max of a non-empty list of
    milliseconds."""
    ordered = sorted(values_ms)
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]
    return {"median_ms": statistics.median(ordered), "p95_ms": p95, "max_ms": ordered[-1]}


def summarise(rounds: list[tuple[float, list[float]]], gateways: int) -> dict:
    """The rounds (seconds: the admin call, and each gateway serving) as milliseconds, with the distribution of the
    admin call and of the last gateway to serve."""
    calls_ms = [call * 1000 for call, _ in rounds]
    served_ms = [[s * 1000 for s in served] for _, served in rounds]
    return {"rollbacks": len(rounds), "gateways": gateways,
            "admin_call": distribution(calls_ms), "all_gateways_serving": distribution([max(s) for s in served_ms]),
            "rounds": [{"admin_call_ms": call, "gateways_serving_ms": served}
                       for call, served in zip(calls_ms, served_ms)]}


def report(summary: dict) -> None:
    print(f"\nRollback propagation over {summary['rollbacks']} rollbacks, {summary['gateways']} gateways "
          "(admin call → every gateway serving the new policy):")
    for name, key in (("admin call", "admin_call"), ("all gateways serving", "all_gateways_serving")):
        d = summary[key]
        print(f"  {name:<22} median {d['median_ms']:7.1f} ms   p95 {d['p95_ms']:7.1f} ms   max {d['max_ms']:7.1f} ms")


if __name__ == "__main__":
    main()
