"""Gateway vs direct Triton, one run, alternating: ``make bench`` (or ``python -m benchmarks.bench``).

Starts the fleet on embedded defaults, prepares the demo model (stable v1, canary v2 at 10 %),
then loads each target with wrk at 1 and 16 connections and reports requests/s, latency
percentiles and the gateway's ratio to direct Triton measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import orjson

from benchmarks.wrk import WrkResult, run_wrk
from mlfleet.demo.run import MODEL, deploy, prepare_features, register_versions, sample_instances
from mlfleet.demo.data import model_frame
from mlfleet.demo.train import input_columns
from mlfleet.fleet import Fleet, FleetConfig

RESULTS = Path(__file__).resolve().parent / "results"


def triton_body(vector: list[float]) -> bytes:
    return orjson.dumps({"inputs": [{"name": "input", "shape": [1, len(vector)], "datatype": "FP32", "data": vector}]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="Seconds per wrk run.")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=1, help="Alternating rounds over all targets.")
    args = parser.parse_args()

    config = FleetConfig.from_env(home=Path(".mlfleet/bench"))
    with Fleet(config):
        dataset = prepare_features(config, seed=7, shift=False, echo=print)
        stable, canary = register_versions(config, dataset, seed=7, echo=print)
        deploy(config, stable, canary, 10.0, print)
        instance = sample_instances(dataset, 1, seed=1)[0]
        frame = model_frame(dataset)
        row = frame[(frame.user_id == instance["user_id"]) & (frame.merchant_id == instance["merchant_id"])].iloc[0]
        vector = [float(row[c]) for c in input_columns()]
        targets = [
            ("direct triton", f"http://127.0.0.1:{config.triton_http_port}/v2/models/{MODEL}/versions/{stable}/infer",
             triton_body(vector)),
            ("gateway full path", f"{config.url('gateway')}/v1/models/{MODEL}/predict",
             orjson.dumps({"instances": [instance]})),
        ]
        results: list[WrkResult] = []
        for _ in range(args.rounds):
            for connections in args.connections:
                for name, url, body in targets:
                    result = run_wrk(name, url, body, connections=connections, duration_s=args.duration)
                    results.append(result)
                    print(f"  {name:<20} c={connections:<3} {result.requests_per_s:>9,.0f} req/s  "
                          f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  errors {result.errors}")
    report = summarise(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"machine": platform.node(), "results": [r.as_dict() for r in results],
                                "ratios": report}, indent=2))
    print_table(report)
    print(f"\nResults written to {path}")


def summarise(results: list[WrkResult]) -> list[dict]:
    rows = []
    for connections in sorted({r.connections for r in results}):
        direct = [r for r in results if r.name == "direct triton" and r.connections == connections]
        gateway = [r for r in results if r.name == "gateway full path" and r.connections == connections]
        if not direct or not gateway:
            continue
        d_rps = sum(r.requests_per_s for r in direct) / len(direct)
        g_rps = sum(r.requests_per_s for r in gateway) / len(gateway)
        rows.append({
            "connections": connections,
            "direct_rps": d_rps, "gateway_rps": g_rps, "throughput_ratio": g_rps / d_rps,
            "direct_p50_ms": min(r.p50_ms for r in direct), "gateway_p50_ms": min(r.p50_ms for r in gateway),
            "direct_p99_ms": min(r.p99_ms for r in direct), "gateway_p99_ms": min(r.p99_ms for r in gateway),
        })
    return rows


def print_table(rows: list[dict]) -> None:
    print("\n conns | direct Triton req/s | gateway req/s | ratio | p50 direct/gateway ms | p99 direct/gateway ms")
    for r in rows:
        print(f" {r['connections']:>5} | {r['direct_rps']:>19,.0f} | {r['gateway_rps']:>13,.0f} | "
              f"{r['throughput_ratio']:>5.0%} | {r['direct_p50_ms']:>9.2f} / {r['gateway_p50_ms']:<9.2f} | "
              f"{r['direct_p99_ms']:>9.2f} / {r['gateway_p99_ms']:.2f}")


if __name__ == "__main__":
    main()
