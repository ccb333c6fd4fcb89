"""Two gateways on one running fleet, loaded in turn: how the README's "lab" figures are made.

``python -m benchmarks.lab --baseline HEAD~1`` starts the fleet under ``.mlfleet/lab`` (default
ports: no other fleet may run), deploys the demo model as the benchmark does (stable v1, canary
v2 at 10 %, 512 users), then starts two more gateways beside the fleet's own (which stays idle):
one from this checkout, one from the code of ``--baseline`` (a git ref, checked out in a
temporary worktree) and/or with ``--env KEY=VALUE`` settings. Both share the fleet's Triton,
Redis and monitor, and both get the local fleet's gateway settings, busy polling included (code from before busy
polling ignores that setting, so against such a ``--baseline`` one side polls and the other does not: run with
``MLFLEET_GATEWAY_BUSY_POLL_US=0`` in the environment, which the fleet leaves to both, to compare the code
alone). The full path is then loaded with wrk at 16
connections (``--connections``; ``--rows`` instances per request), alternating between
the two gateways (``--rounds`` times each, ``--duration`` seconds per run), and each run reports
requests/s, p50/p99 and the CPU every process spent per request (from ``/proc``): the gateway
that served it, Redis (when it runs on this machine), the monitor, Triton with its
Python-backend stubs, and wrk.

One fleet for both sides is what makes a difference of a few per cent visible on a shared,
noisy machine: the two gateways see the same Redis keyspace, the same Triton and the same
neighbours, and alternating spreads the machine's drift over both. Even so, two identical
gateways (an A/A run) came out 2 % apart here: read a smaller difference as none. A result goes to
``benchmarks/results/lab-<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import psutil
import redis

from benchmarks import RESULTS
from benchmarks.bench import BODIES, LITE_MODEL, register_lite, wait_monitor_idle, wait_served
from benchmarks.wrk import run_wrk
from mlfleet.demo.run import MODEL, deploy, prepare_features, register_versions, sample_instances
from mlfleet.fleet import ROOT, Fleet, FleetConfig
from mlfleet.runtime.processes import free_port, http_ok, start_process, stop_process, wait_until
from mlfleet.runtime.services import service_argv

def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far; a process gone mid-run spoils the run's figures."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        raise RuntimeError(f"process {pid} exited during the run; see the fleet's logs") from None
    return times.user + times.system


def children_cpu_seconds() -> float:
    """CPU time of this process's finished children (wrk, once each run has ended; the fleet's children are still
    running and not counted)."""
    times = psutil.Process().cpu_times()
    return times.children_user + times.children_system


def pids_with(fragment: str) -> list[int]:
    """Processes whose command line contains ``fragment``."""
    return [process.pid for process in psutil.process_iter(["cmdline"])
            if fragment in " ".join(process.info["cmdline"] or ())]


def redis_pid(url: str) -> int | None:
    """The Redis server's process, when it runs on this machine (a loopback or Unix-socket URL: a pid reported by a
    Redis elsewhere, or in a container, would name an unrelated local process)."""
    parts = urlsplit(url)
    if parts.scheme != "unix" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    pid = redis.Redis.from_url(url).info("server").get("process_id")
    return pid if pid and Path(f"/proc/{pid}").exists() else None


@contextlib.contextmanager
def baseline_checkout(ref: str) -> Iterator[Path]:
    """``ref``'s code in a temporary git worktree (removed afterwards)."""
    folder = Path(tempfile.mkdtemp(prefix="mlfleet-lab-"))
    try:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(folder), ref], check=True)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        yield folder
    finally:
        removed = subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], check=False)
        if removed.returncode != 0:
            print(f"could not remove the worktree {folder}; `git worktree prune` after deleting it")


def request_bodies(instances: list[dict], rows: int) -> list[bytes]:
    """One predict body per instance: ``rows`` instances from it on (wrapping round), so that every body differs."""
    return [orjson.dumps({"instances": (instances[k:] + instances[:k])[:rows]}) for k in range(len(instances))]


def start_gateway(fleet: Fleet, port: int, *, code: Path, overrides: dict[str, str], log_file: Path):
    """Another gateway of ``fleet`` on ``port``, running the code under ``code`` with the fleet's settings and
    ``overrides`` (not waited for: see :func:`wait_ready`)."""
    config = dataclasses.replace(fleet.config, gateway_port=port)
    env = Fleet(config).service_env("gateway") | overrides
    env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
    return start_process(service_argv("gateway", host=config.host, port=port), log_file=log_file, env=env, cwd=code)


def wait_ready(fleet: Fleet, port: int, process, log_file: Path) -> None:
    wait_until(lambda: http_ok(f"http://{fleet.config.host}:{port}/readyz"), timeout_s=120, what=f"gateway on {port}",
               process=process, log_file=log_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="Git ref whose gateway runs beside this checkout's (e.g. HEAD~1).")
    parser.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Gateway settings of the second gateway (e.g. MLFLEET_GATEWAY_BATCH_MAX_IN_FLIGHT=2).")
    parser.add_argument("--rounds", type=int, default=6, help="Runs per gateway, alternating.")
    parser.add_argument("--duration", type=int, default=8, help="Seconds per wrk run.")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rows", type=int, default=1,
                        help="Instances per request (32: the benchmark's batched rows; requests/s then count requests).")
    args = parser.parse_args()
    if not 1 <= args.rows <= BODIES:
        parser.error(f"--rows takes 1 to {BODIES}")
    if any("=" not in item for item in args.env):
        parser.error("--env takes KEY=VALUE settings")
    overrides = dict(item.split("=", 1) for item in args.env)
    if args.baseline and subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet",
                                         f"{args.baseline}^{{commit}}"], check=False,
                                        capture_output=True).returncode != 0:
        parser.error(f"--baseline {args.baseline!r} is not a commit of this repository")
    if args.baseline is None and not overrides:
        parser.error("give --baseline, --env or both: otherwise both gateways would be the same")

    config = FleetConfig.from_env(home=Path(".mlfleet/lab"))
    with Fleet(config) as fleet, contextlib.ExitStack() as stack:
        dataset = prepare_features(config, seed=7, shift=False, echo=print)
        stable, canary = register_versions(config, dataset, seed=7, echo=print)
        deploy(config, stable, canary, 10.0, print)
        register_lite(config)
        wait_served(config, LITE_MODEL)
        bodies = request_bodies(sample_instances(dataset, BODIES, seed=2), args.rows)

        code = stack.enter_context(baseline_checkout(args.baseline)) if args.baseline else ROOT
        label = " ".join(filter(None, [args.baseline and f"code of {args.baseline}", " ".join(args.env)]))
        sides, started = {}, []
        # Both sides are gateways started together, alike, beside the fleet's own (which stays idle): a gateway
        # compared with the fleet's own came out a few per cent ahead or behind for being that one.
        for name, side_code, side_overrides in (("this checkout", ROOT, {}), (label, code, overrides)):
            port = free_port()
            log_file = config.logs / f"gateway-{port}.log"
            process = start_gateway(fleet, port, code=side_code, overrides=side_overrides, log_file=log_file)
            stack.callback(stop_process, process)
            sides[name] = (port, process.pid)
            started.append((port, process, log_file))
        for port, process, log_file in started:
            wait_ready(fleet, port, process, log_file)
        monitor = next(c.process for c in fleet.children if c.name == "monitor")
        print(f"\nA: this checkout on {sides['this checkout'][0]}; B: {label} on {sides[label][0]}")

        triton = pids_with(str((config.home / "triton").resolve()))
        store = redis_pid(config.redis_url)
        runs = []
        for round_ in range(args.rounds):
            order = list(sides.items()) if round_ % 2 == 0 else list(reversed(sides.items()))
            for name, (gateway_port, gateway_pid) in order:
                wait_monitor_idle(config)
                watched = {"gateway": [gateway_pid], "redis": [store] if store else [], "monitor": [monitor.pid],
                           "triton": triton}
                before = {k: sum(map(cpu_seconds, pids)) for k, pids in watched.items()}
                wrk_before = children_cpu_seconds()
                url = f"http://{config.host}:{gateway_port}/v1/models/{MODEL}/predict"
                result = run_wrk(name, url, bodies, connections=args.connections, duration_s=args.duration)
                spent = {k: (sum(map(cpu_seconds, pids)) - before[k]) * 1e6 / max(result.requests, 1)
                         for k, pids in watched.items() if pids}
                spent["wrk"] = (children_cpu_seconds() - wrk_before) * 1e6 / max(result.requests, 1)
                runs.append({"side": name, **result.as_dict(), "cpu_us_per_request": spent})
                print(f"  {name:<32} {result.requests_per_s:7,.0f} req/s  p50 {result.p50_ms:5.2f}  "
                      f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}  CPU µs/request: "
                      + "  ".join(f"{k} {v:.0f}" for k, v in spent.items()), flush=True)

    summary = {}
    for name in sides:
        mine = [r for r in runs if r["side"] == name]
        summary[name] = {"requests_per_s_mean": statistics.mean(r["requests_per_s"] for r in mine),
                         "requests_per_s": [round(r["requests_per_s"]) for r in mine],
                         "gateway_cpu_us_mean": statistics.mean(r["cpu_us_per_request"]["gateway"] for r in mine)}
        print(f"{name:<34} mean {summary[name]['requests_per_s_mean']:7,.0f} req/s  "
              f"gateway {summary[name]['gateway_cpu_us_mean']:.0f} µs/request  {summary[name]['requests_per_s']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"lab-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M:%S"), "baseline": args.baseline,
                                "env": overrides, "connections": args.connections, "rows": args.rows,
                                "duration_s": args.duration,
                                "runs": runs, "summary": summary}, indent=2))
    print(f"Results written to {path}")


if __name__ == "__main__":
    main()
