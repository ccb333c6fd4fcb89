"""Triton's dynamic-batching delay, swept for the ceiling: ``python -m benchmarks.triton_delay 0 50 100``.

Starts the fleet under ``.mlfleet/delay`` (default ports: no other fleet may run), registers the demo's versions,
and loads one copy of its stable version per delay into the fleet's Triton (``delay-<µs>``, the registry's config
for the Python backend with only ``max_queue_delay_microseconds`` changed), each warmed up by a short run. Then
single-row requests go straight to Triton with ``wrk``, at 1 and 16 connections, every copy in turn and the order
reversed each round, so the copies share the machine's drift. Prints each run and the mean per delay and
connection count, and writes ``benchmarks/results/triton-delay-<time>.json``; a run with errors then fails the
sweep (a copy answering errors fast would otherwise read as a fast copy). The registry's
``PYTHON_BACKEND_QUEUE_DELAY_US`` is the best of such a sweep (the figures it rests on are in the README's
Performance section).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import tritonclient.grpc.aio as triton_grpc

from benchmarks import RESULTS
from benchmarks.bench import stable_artifact, triton_body
from benchmarks.wrk import run_wrk
from mlfleet.demo.run import prepare_features, register_versions
from mlfleet.demo.train import input_columns
from mlfleet.fleet import Fleet, FleetConfig
from services.registry.triton_repository import BACKEND_MODEL_PY, load_request


def delay_config(onnx: bytes, delay_us: int) -> tuple[str, dict, dict[str, bytes]]:
    """The name, config and files of the copy of ``onnx`` (as version 1) batched with ``delay_us``."""
    name = f"delay-{delay_us}"
    config, files = load_request(name, {1: onnx}, platform="python", gpu=False,
                                 backend_model_py=BACKEND_MODEL_PY.read_bytes())
    config["dynamic_batching"]["max_queue_delay_microseconds"] = delay_us
    return name, config, files


async def load_copies(grpc_url: str, onnx: bytes, delays: list[int]) -> list[str]:
    client = triton_grpc.InferenceServerClient(grpc_url)
    try:
        names = []
        for delay in delays:
            name, config, files = delay_config(onnx, delay)
            await client.load_model(name, config=json.dumps(config), files=files)
            names.append(name)
        return names
    finally:
        await client.close()


def infer_url(config: FleetConfig, name: str) -> str:
    return f"http://{config.host}:{config.triton_http_port}/v2/models/{name}/versions/1/infer"


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Mean requests/s and p50 per ``delay_us`` and ``connections`` of ``runs``, keyed ``"<delay> µs, c=<n>"``."""
    groups: dict[tuple[int, int], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["delay_us"], run["connections"]), []).append(run)
    return {f"{delay} µs, c={connections}": {
                "requests_per_s_mean": statistics.mean(r["requests_per_s"] for r in group),
                "p50_ms_mean": statistics.mean(r["p50_ms"] for r in group), "runs": len(group)}
            for (delay, connections), group in sorted(groups.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("delays", nargs="+", type=int, metavar="DELAY_US", help="Delays to compare, in µs.")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=int, default=5, help="Seconds per wrk run.")
    args = parser.parse_args()
    if any(delay < 0 for delay in args.delays):
        parser.error("a delay is a number of microseconds, 0 or more")
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    delays = list(dict.fromkeys(args.delays))

    config = FleetConfig.from_env(home=Path(".mlfleet/delay"))
    runs = []
    with Fleet(config):
        dataset = prepare_features(config, seed=7, shift=False, echo=print)
        stable, _ = register_versions(config, dataset, seed=7, echo=print)
        onnx = stable_artifact(config, stable).read_bytes()
        names = asyncio.run(load_copies(f"{config.host}:{config.triton_grpc_port}", onnx, delays))
        body = triton_body([[0.5] * len(input_columns())])
        for name in names:
            run_wrk(f"{name} warm-up", infer_url(config, name), [body], connections=1, duration_s=1)
        for round_ in range(args.rounds):
            for connections in (1, 16):
                order = list(zip(delays, names))
                for delay, name in order if round_ % 2 == 0 else reversed(order):
                    result = run_wrk(name, infer_url(config, name), [body], connections=connections,
                                     duration_s=args.duration)
                    runs.append({"delay_us": delay, **result.as_dict()})
                    print(f"  round {round_ + 1}  c={connections:<3} delay {delay:>5} µs  {result.requests_per_s:8,.0f} "
                          f"req/s  p50 {result.p50_ms:.3f}  p99 {result.p99_ms:.2f} ms  errors {result.errors}",
                          flush=True)
    summary = summarize(runs)
    for label, figures in summary.items():
        print(f"{label:<16} mean {figures['requests_per_s_mean']:8,.0f} req/s  p50 {figures['p50_ms_mean']:.3f} ms")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"triton-delay-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": runs, "summary": summary},
                               indent=2))
    print(f"Results written to {path}")
    failed = [f"{r['name']} c={r['connections']}: {r['errors']} errors" for r in runs if r["errors"]]
    if failed:
        raise SystemExit("runs with errors, so their figures are not a copy's speed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
