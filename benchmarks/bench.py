"""The gateway against the ceiling and its peers, in one run: ``make bench`` (or ``python -m benchmarks.bench``).

Starts the fleet on embedded defaults (default ports: no other fleet may run), prepares the
demo model (stable v1, canary v2 at 10 %) and a feature-free model for routing only, starts
the peers (MLServer, BentoML; each installs into its own venv on first use), then loads every
target with wrk, alternating, at each concurrency:

1. direct Triton, one row and 32 rows per request (the ceiling),
2. gateway routing only (a version whose signature has no Feast input),
3. gateway full path (Feast enrichment, 10 % canary, prediction events),
4. full path with 32 instances per request,
5. the peers serving the same ONNX model with their recommended worker setting (MLServer's default of one
   inference process, BentoML's one worker), and MLServer tuned past it: inference in its server's own process
   (``parallel_workers=0``), shown beside the verdict, not judged.

Then an open-loop run at a fixed rate (``benchmarks.openloop``, in its own process) against
direct Triton (showing the generator keeps up) and the full path, and the full path at lower
rates; the gateway's feature lookup (``FeatureReader``) next to Feast's SDK call, 1 and 32
entities; and event accounting under overload (answered requests against the stream's
``entries-added`` and the gateway's dropped counter). Writes JSON and a PNG
chart under ``benchmarks/results/``, prints a table, and ends with the verdict on each of issue 8's targets
(:mod:`benchmarks.targets`), judged from this run's figures alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

import httpx
import orjson
import redis
from prometheus_client import CollectorRegistry, Histogram

from benchmarks import RESULTS
from benchmarks.peers import Peer, start_bentoml, start_mlserver
from benchmarks.rollback import small_onnx
from benchmarks.targets import BATCH, CEILING, FULL_PATH, PEER, ROUTING_ONLY, TUNED_PEER, judge, print_verdicts
from benchmarks.wrk import WrkResult, run_wrk
from mlfleet.demo.data import model_frame
from mlfleet.demo.run import MODEL, deploy, prepare_features, register_versions, sample_instances
from mlfleet.demo.train import input_columns
from mlfleet.fleet import Fleet, FleetConfig
from mlfleet.runtime.processes import free_port, stop_processes
from services.common.feature_store import open_feature_store
from services.common.redis import PREDICTIONS_STREAM
from services.gateway.features import FeatureReader

LITE_MODEL = "bench-routing"
"""A model whose signature has request inputs only: the gateway's routing path without Feast."""
BODIES = 512
"""Distinct single-row bodies the full path's load rotates through."""


def triton_body(rows: list[list[float]]) -> bytes:
    data = [value for row in rows for value in row]
    return orjson.dumps({"inputs": [{"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP32",
                                     "data": data}]})


def model_inputs(frame, instance: dict) -> list[float]:
    """The input vector the gateway builds for ``instance`` (its request fields and its entities' features)."""
    row = frame[(frame.user_id == instance["user_id"]) & (frame.merchant_id == instance["merchant_id"])].iloc[0]
    return [float(row[column]) for column in input_columns()]


def register_lite(config: FleetConfig) -> int:
    """The feature-free model, stable at its first version; returns the policy revision."""
    headers = {"Authorization": f"Bearer {config.admin_key()}"}
    with httpx.Client(base_url=config.url("registry"), headers=headers, timeout=120) as registry:
        created = registry.post("/v1/models", json={"name": LITE_MODEL, "gates": {"min_auc": None, "min_accuracy": None}})
        if created.status_code != 409:
            created.raise_for_status()
        if registry.get(f"/v1/models/{LITE_MODEL}/versions").json()["count"] == 0:
            signature = {"inputs": [{"name": f"x{i}", "source": "request"} for i in range(3)]}
            registry.post(f"/v1/models/{LITE_MODEL}/versions", files={"artifact": ("model.onnx", small_onnx(0))},
                          data={"metadata": json.dumps({"signature": signature})}).raise_for_status()
        response = registry.put(f"/v1/models/{LITE_MODEL}/traffic", json={"stable": 1})
        response.raise_for_status()
        return response.json()["revision"]


def stable_artifact(config: FleetConfig, version: int) -> Path:
    headers = {"Authorization": f"Bearer {config.admin_key()}"}
    response = httpx.get(f"{config.url('registry')}/v1/models/{MODEL}/versions/{version}", headers=headers, timeout=30)
    response.raise_for_status()
    return (config.home / "artifacts" / f"{response.json()['sha256']}.onnx").resolve()


def wait_served(config: FleetConfig, model: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        table = httpx.get(f"{config.url('gateway')}/v1/routes", timeout=5).json()["table"]
        if any(route["model"] == model for route in table["models"]):
            return
        time.sleep(0.1)
    raise TimeoutError(f"the gateway does not serve {model}")


def gateway_metric(config: FleetConfig, name: str) -> float:
    """Sum of a gateway counter's series (all labels)."""
    text = httpx.get(f"{config.url('gateway')}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))


def open_loop(url: str, bodies: list[bytes], *, rate: float, duration_s: float) -> dict:
    """``benchmarks.openloop`` in a process of its own, sending ``bodies`` in turn."""
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as file:
        file.write(b"\n".join(bodies))
    try:
        out = subprocess.run([sys.executable, "-m", "benchmarks.openloop", url, "--body-file", file.name,
                              "--rate", str(rate), "--duration", str(duration_s)],
                             capture_output=True, text=True, check=True, timeout=duration_s + 120).stdout
    finally:
        Path(file.name).unlink(missing_ok=True)
    return json.loads(out.strip().splitlines()[-1])


def feast_latency(config: FleetConfig, instances: list[dict], rounds: int = 300) -> dict:
    """The gateway's feature lookup (:class:`FeatureReader`) timed from this process for 1 and 32 entities, next
    to Feast's SDK call (``get_online_features_async`` + ``to_dict``) for the same rows."""
    store = open_feature_store(redis_url=config.redis_url, feast_dir=config.home / "feast", registry_cache_ttl_s=0,
                               registry_cache_mode="thread")
    features = [f"{view.name}:{field.name}" for view in store.list_feature_views() for field in view.features]
    latency = Histogram("lookup", "lookup", registry=CollectorRegistry())
    reader = FeatureReader(store, config.redis_url, timeout_s=5, latency=latency, registry_refresh_s=3600)

    async def sdk(rows: list[dict]) -> None:
        (await store.get_online_features_async(features=features, entity_rows=rows, full_feature_names=True)).to_dict()

    async def timed(lookup, rows: list[dict]) -> dict:
        await lookup(rows)
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            await lookup(rows)
            samples.append((time.perf_counter() - started) * 1000)
        samples.sort()
        return {"entities": len(rows), "p50_ms": samples[len(samples) // 2],
                "p99_ms": samples[int(0.99 * (len(samples) - 1))],
                "per_entity_us": samples[len(samples) // 2] * 1000 / len(rows)}

    async def measure() -> list[dict]:
        keys = [{"user_id": i["user_id"], "merchant_id": i["merchant_id"]} for i in instances]
        await reader.warm_up()
        try:
            results = []
            for rows in (keys[:1], keys[:BATCH]):
                gateway = await timed(lambda r: reader.lookup(features, r), rows)
                gateway["feast_sdk_p50_ms"] = (await timed(sdk, rows))["p50_ms"]
                results.append(gateway)
            return results
        finally:
            await reader.close()

    return {"features": len(features), "results": asyncio.run(measure())}


def stream_entries_added(stream: redis.Redis) -> int:
    """Entries ever appended to the predictions stream: Redis 7's ``entries-added``, which trimming to the stream's
    length cap does not lower (``XLEN`` stops growing at the cap), else ``XLEN`` on older Redis."""
    info = stream.xinfo_stream(PREDICTIONS_STREAM)
    added = info.get("entries-added")
    return int(added) if added is not None else stream.xlen(PREDICTIONS_STREAM)


def wait_monitor_idle(config: FleetConfig, timeout_s: float = 60) -> None:
    """Wait until the monitor has consumed and acknowledged every event so far, so a run does not share the cores
    with the monitor still working through the previous run's events."""
    stream = redis.Redis.from_url(config.redis_url)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            groups = stream.xinfo_groups(PREDICTIONS_STREAM)
            last = stream.xinfo_stream(PREDICTIONS_STREAM)["last-generated-id"]
            if all(g["pending"] == 0 and g["last-delivered-id"] == last for g in groups):
                return
            time.sleep(0.2)
        print(f"  (the monitor was still busy after {timeout_s:.0f} s; measuring anyway)")
    finally:
        stream.close()


def event_accounting(config: FleetConfig, url: str, bodies: list[bytes], *, duration_s: int) -> dict:
    """Overload the full path (64 connections) and account for every prediction event."""
    stream = redis.Redis.from_url(config.redis_url)
    time.sleep(2)  # let the writer flush what earlier runs queued
    before = {"added": stream_entries_added(stream),
              "dropped": gateway_metric(config, "mlfleet_gateway_events_dropped_total"),
              "enqueued": gateway_metric(config, "mlfleet_gateway_events_enqueued_total")}
    load = run_wrk("overload", url, bodies, connections=64, duration_s=duration_s)
    time.sleep(3)
    written = stream_entries_added(stream) - before["added"]
    dropped = gateway_metric(config, "mlfleet_gateway_events_dropped_total") - before["dropped"]
    enqueued = gateway_metric(config, "mlfleet_gateway_events_enqueued_total") - before["enqueued"]
    stream.close()
    answered = load.requests
    # wrk counts the responses it read; requests in flight when it stopped are answered (and evented) too, so
    # written + dropped may exceed `answered` by up to the connection count. A positive `unaccounted` is silent loss.
    return {"connections": 64, "requests_per_s": load.requests_per_s, "answered": answered, "errors": load.errors,
            "events_enqueued": enqueued, "events_written": written, "events_dropped": dropped,
            "unaccounted": max(answered - written - dropped, 0)}


def interpreter_speed() -> float:
    """Microseconds this host takes to run ``sum(range(1000))`` in Python, the best of five timings: how fast it runs
    the interpreter, which the gateway's share of a request is made of and Triton's (C++) is not. Hosts this project
    ran on differed several times over, and the gateway's ratios to Triton moved with them."""
    return min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6


ECHO = "import os\nwhile byte := os.read(0, 1):\n    os.write(1, byte)"
"""A process that sends back each byte it reads."""


def wake_up_round_trip(rounds: int = 2000) -> float:
    """Microseconds for a byte to reach another process over a pipe and come back, the best of three runs: two
    wake-ups of a sleeping process, which every request pays several times over (client, gateway, Redis, Triton and
    its backend stubs), and which ``sum(range(1000))`` does not time (see the performance log, 2026-11-27)."""
    with subprocess.Popen([sys.executable, "-c", ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          bufsize=0) as echo:
        send, receive = echo.stdin.fileno(), echo.stdout.fileno()

        def round_trip() -> None:
            os.write(send, b"x")
            if os.read(receive, 1) != b"x":
                raise RuntimeError("the echo process stopped answering")

        try:
            round_trip()  # the echo is up
            return min(timeit.repeat(round_trip, number=rounds, repeat=3)) / rounds * 1e6
        finally:
            echo.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5, help="Seconds per wrk run.")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3,
                        help="Alternating rounds over all targets; each target's figures are the mean of its rounds "
                             "(one 8 s round put the full path at 41-50 %% of Triton on the same code, three rounds "
                             "smooth that).")
    parser.add_argument("--rate", type=float, default=3200, help="Open-loop requests per second.")
    parser.add_argument("--lower-rates", type=float, nargs="*", default=[2400, 1600],
                        help="Further open-loop rates for the full path, to show what it sustains.")
    parser.add_argument("--no-peers", action="store_true", help="Skip MLServer and BentoML.")
    args = parser.parse_args()
    python_speed_us, wake_up_us = interpreter_speed(), wake_up_round_trip()
    print(f"this host runs sum(range(1000)) in {python_speed_us:.1f} µs and passes a byte to another process and back "
          f"in {wake_up_us:.1f} µs (compare runs of this benchmark across hosts by both: the gateway's share of a "
          "request is Python, Triton's is not, and every request wakes several processes)")

    config = FleetConfig.from_env(home=Path(".mlfleet/bench"))
    if config.triton_latency_summaries:
        print("warning: Triton's latency summaries are on (MLFLEET_TRITON_LATENCY_SUMMARIES): they lower direct "
              "Triton's throughput, the ceiling every ratio is taken against, by up to ~40 % here")
    peers: list[Peer] = []
    with Fleet(config):
        dataset = prepare_features(config, seed=7, shift=False, echo=print)
        stable, canary = register_versions(config, dataset, seed=7, echo=print)
        deploy(config, stable, canary, 10.0, print)
        register_lite(config)
        wait_served(config, LITE_MODEL)
        instances = sample_instances(dataset, BATCH, seed=1)
        frame = model_frame(dataset)
        vectors = [model_inputs(frame, instance) for instance in instances]
        # Many users, so requests spread over entities and over the 90/10 split like real traffic (one fixed
        # body would send every request to the one version its routing key hashes to).
        single_bodies = [orjson.dumps({"instances": [i]}) for i in sample_instances(dataset, BODIES, seed=2)]
        batch_bodies = [orjson.dumps({"instances": instances[k:] + instances[:k]}) for k in range(BATCH)]
        gateway = f"{config.url('gateway')}/v1/models"
        triton = f"http://127.0.0.1:{config.triton_http_port}/v2/models/{MODEL}/versions/{stable}/infer"
        targets = [
            (CEILING, triton, triton_body(vectors[:1]), 1),
            (f"{CEILING} x{BATCH}", triton, triton_body(vectors), BATCH),
            (ROUTING_ONLY, f"{gateway}/{LITE_MODEL}/predict",
             orjson.dumps({"instances": [{"x0": 0.5, "x1": -1.0, "x2": 2.0}]}), 1),
            (FULL_PATH, f"{gateway}/{MODEL}/predict", single_bodies, 1),
            (f"{FULL_PATH} x{BATCH}", f"{gateway}/{MODEL}/predict", batch_bodies, BATCH),
        ]
        try:
            if not args.no_peers:
                onnx = stable_artifact(config, stable)
                workdir = (config.home / "peers").resolve()
                workdir.mkdir(parents=True, exist_ok=True)
                # Each peer joins `peers` as it starts, so that one failing to start leaves the others stopped.
                peers.append(start_mlserver(onnx, vectors[0], port=free_port(), grpc_port=free_port(),
                                            metrics_port=free_port(), workdir=workdir))
                peers.append(start_bentoml(onnx, vectors[0], port=free_port(), workdir=workdir))
                judged = list(peers)
                peers.append(start_mlserver(onnx, vectors[0], port=free_port(), grpc_port=free_port(),
                                            metrics_port=free_port(), workdir=workdir, parallel_workers=0))
                targets += [(f"{PEER if peer in judged else TUNED_PEER} {peer.name}", peer.url, peer.body, 1)
                            for peer in peers]

            results: list[WrkResult] = []
            for _ in range(args.rounds):
                for connections in args.connections:
                    for name, url, body, rows in targets:
                        wait_monitor_idle(config)
                        result = run_wrk(name, url, body, connections=connections, duration_s=args.duration,
                                         rows_per_request=rows)
                        results.append(result)
                        print(f"  {name:<26} c={connections:<3} {result.requests_per_s:>8,.0f} req/s "
                              f"{result.predictions_per_s:>9,.0f} pred/s  p50 {result.p50_ms:6.2f}  "
                              f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}")
        finally:
            stop_processes([peer.process for peer in peers])
        print("\nopen loop")
        open_loops = {}
        full_path = f"{gateway}/{MODEL}/predict"
        for name, url, bodies, rate in ((CEILING, triton, [triton_body(vectors[:1])], args.rate),
                                        (FULL_PATH, full_path, single_bodies, args.rate),
                                        *((f"{FULL_PATH} at {r:,.0f}/s", full_path, single_bodies, r)
                                          for r in args.lower_rates)):
            wait_monitor_idle(config)
            open_loops[name] = open_loop(url, bodies, rate=rate, duration_s=args.duration)
            o = open_loops[name]
            print(f"  {name:<30} {rate:>6,.0f}/s -> {o['achieved_rps']:>6,.0f} req/s  p50 {o['p50_ms']:6.2f}  "
                  f"p95 {o['p95_ms']:6.2f}  p99 {o['p99_ms']:7.2f} ms  errors {o['errors']}  "
                  f"generator lag p99 {o['send_lag_p99_ms']:.2f} ms, "
                  f"{o['generator_cpu_us_per_request']:.0f} µs CPU per request")
        feast = feast_latency(config, instances)
        events = event_accounting(config, f"{gateway}/{MODEL}/predict", single_bodies, duration_s=args.duration)

    report = {"machine": platform.node(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), "duration_s": args.duration,
              "python_sum_range_1000_us": python_speed_us, "wake_up_round_trip_us": wake_up_us,
              "results": [r.as_dict() for r in results], "summary": summarise(results), "open_loop": open_loops,
              "feast_lookup": feast, "events_under_overload": events,
              "triton_latency_summaries": config.triton_latency_summaries}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"bench-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))  # the run's figures are kept whatever judging them does
    verdicts = judge(report)
    report["targets"] = [v.as_dict() for v in verdicts]
    path.write_text(json.dumps(report, indent=2))
    chart(report["summary"], RESULTS / f"bench-{stamp}.png")
    print_table(report["summary"])
    for entry in feast["results"]:
        print(f"\nFeast lookup, {entry['entities']} entities: p50 {entry['p50_ms']:.2f} ms  p99 {entry['p99_ms']:.2f} ms  "
              f"({entry['per_entity_us']:.0f} µs per entity; Feast's SDK call p50 {entry['feast_sdk_p50_ms']:.2f} ms)",
              end="")
    print(f"\nevents under overload (c=64): {events['answered']:,} answered, {events['events_written']:,} written, "
          f"{events['events_dropped']:,.0f} dropped (counted), {events['unaccounted']:,.0f} unaccounted")
    print_verdicts(verdicts)
    print(f"\nResults written to {path} and {path.with_suffix('.png')}")


def summarise(results: list[WrkResult]) -> list[dict]:
    """Per target and concurrency (mean of rounds), with ratios to direct Triton at the same concurrency and rows:
    of the means, and of each round's run to that round's ceiling (``results`` in the order they ran)."""
    rows = []
    for connections in sorted({r.connections for r in results}):
        for name in dict.fromkeys(r.name for r in results):
            runs = [r for r in results if r.name == name and r.connections == connections]
            batched = name.endswith(f"x{BATCH}")
            ceiling = [r for r in results if r.connections == connections
                       and r.name == (f"{CEILING} x{BATCH}" if batched else CEILING)]
            mean = lambda field, runs=runs: sum(getattr(r, field) for r in runs) / len(runs)  # noqa: E731
            ceiling_pps = sum(r.predictions_per_s for r in ceiling) / len(ceiling)
            rows.append({
                "target": name, "connections": connections, "requests_per_s": mean("requests_per_s"),
                "predictions_per_s": mean("predictions_per_s"), "p50_ms": mean("p50_ms"), "p95_ms": mean("p95_ms"),
                "p99_ms": mean("p99_ms"), "errors": sum(r.errors for r in runs),
                "ratio_to_ceiling": mean("predictions_per_s") / ceiling_pps,
                "ratio_by_round": [r.predictions_per_s / c.predictions_per_s for r, c in zip(runs, ceiling)],
            })
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n {'target':<26} conns |    req/s |   pred/s | ratio | by round     |   p50 ms |   p95 ms |   p99 ms | errors")
    for r in rows:
        by_round = "/".join(f"{ratio * 100:.0f}" for ratio in r["ratio_by_round"])
        print(f" {r['target']:<26} {r['connections']:>5} | {r['requests_per_s']:>8,.0f} | {r['predictions_per_s']:>8,.0f} | "
              f"{r['ratio_to_ceiling']:>5.0%} | {by_round:<12} | {r['p50_ms']:>8.2f} | {r['p95_ms']:>8.2f} | "
              f"{r['p99_ms']:>8.2f} | {r['errors']}")


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    connections = sorted({r["connections"] for r in rows})
    fig, axes = plt.subplots(len(connections), 2, figsize=(13, 3.2 * len(connections)), squeeze=False)
    for row_axes, c in zip(axes, connections):
        subset = [r for r in rows if r["connections"] == c]
        names = [r["target"] for r in subset]
        row_axes[0].barh(names, [r["predictions_per_s"] for r in subset], color="tab:blue")
        row_axes[0].set_title(f"predictions/s at {c} connection{'s' if c > 1 else ''}")
        row_axes[0].set_xscale("log")
        row_axes[0].invert_yaxis()
        row_axes[1].barh(names, [r["p99_ms"] for r in subset], color="tab:red")
        row_axes[1].set_title(f"p99 latency (ms) at {c} connection{'s' if c > 1 else ''}")
        row_axes[1].set_xscale("log")
        row_axes[1].invert_yaxis()
        row_axes[1].set_yticklabels([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
