"""A soak run of the whole fleet: ``python -m benchmarks.soak`` (part of ``make chaos``).

Starts a fleet on free ports in a temporary home (embedded Redis), deploys the demo model (stable
v1, canary v2 at 10 %, features materialized) and drives the gateway's full path (Feast lookup,
canary split, prediction events) at a steady open-loop rate for ``--duration`` seconds: request
*i* leaves at ``start + i / rate`` whatever the others do, with the demo's request body (one
instance, routed by its user). Every 10 s it samples the resident memory (RSS) of every fleet
process with its children (Triton's Python-backend stubs count as Triton's), and prints progress
every 30 s. Twenty requests sent one at a time before the clock starts warm the path up; their
statuses are reported apart (``priming_statuses``).

It reports, into ``benchmarks/results/reliability.json`` under ``soak``: per service the RSS after
the warm-up (``--warmup``, 60 s), at the end, its maximum and growth; requests sent and answered by
status; and the prediction events the gateway published against those the monitor counted. It
exits non-zero unless the verdict holds:

- every request answered 200 (no 5xx, no timeout);
- no service died;
- no service's RSS grew, from the end of the warm-up to the end, by more than ``MAX_GROWTH_MIB``
  or by more than ``MAX_GROWTH_FRACTION`` of its warm-up RSS (whichever is larger of that fraction
  and ``GROWTH_NOISE_MIB``, so that a 10 MiB process is not failed for allocator noise). Redis is
  judged net of the data it keeps by design with a bound: the predictions stream (capped at the
  gateway's ``events_maxlen``, 1,000,000 entries) and the monitor's per-request feedback keys
  (``pred:`` and ``seen:``, expiring after ``prediction_ttl_s`` and ``seen_ttl_s``, a day and a
  week by default). Both are reported (``redis_data``, with bytes per request), because they size
  a production Redis: at steady state they hold rate × TTL × bytes per request;
- events lost (published by the gateway, never counted by the monitor) equal the events the
  gateway counted as dropped (``mlfleet_gateway_events_dropped_total``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import psutil
import redis

from mlfleet.demo.run import MODEL, deploy, prepare_features, register_versions, sample_instances
from mlfleet.fleet import Fleet, FleetConfig
from mlfleet.runtime.processes import free_port
from services.common.redis import PREDICTIONS_STREAM

RESULTS = Path(__file__).resolve().parent / "results" / "reliability.json"
PORTS = ("gateway", "registry", "features", "monitor", "triton_http", "triton_grpc", "triton_metrics")
MIB = 1024 * 1024
FEEDBACK_PREFIXES = ("mlfleet:monitor:pred", "mlfleet:monitor:seen")
"""The monitor's per-request keys (what feedback joins against), each expiring after its TTL."""
FEEDBACK_SAMPLE = 200
MAX_GROWTH_MIB = 64.0
MAX_GROWTH_FRACTION = 0.25
GROWTH_NOISE_MIB = 16.0
SAMPLE_EVERY_S = 10.0
PROGRESS_EVERY_S = 30.0
CLIENT_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 60.0
PRIMING_REQUESTS = 20


def tree_rss(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MiB."""
    process = psutil.Process(pid)
    family = [process] + process.children(recursive=True)
    total = 0
    for member in family:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / MIB


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` in Prometheus text whose labels include ``labels``."""
    total = 0.0
    for match in re.finditer(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


@dataclass
class Load:
    """What the open-loop generator sent and got back."""

    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    """HTTP status per answer; 0: no answer within the client timeout, -1: connection error."""
    latencies_ms: list[float] = field(default_factory=list)
    """Of the 200 answers, from each request's scheduled send time."""
    send_lag_ms: list[float] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        return self.answered - self.statuses[200]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def drive(session: aiohttp.ClientSession, url: str, bodies: list[bytes], *, rate: float, duration_s: float,
                load: Load) -> None:
    """Send ``rate * duration_s`` requests, each at its scheduled time, and wait for every answer."""
    headers = {"Content-Type": "application/json"}
    in_flight: set[asyncio.Task] = set()

    async def send(body: bytes, scheduled: float) -> None:
        load.send_lag_ms.append((time.perf_counter() - scheduled) * 1000)
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                status = response.status
        except TimeoutError:
            status = 0
        except aiohttp.ClientError:
            status = -1
        load.statuses[status] += 1
        if status == 200:
            load.latencies_ms.append((time.perf_counter() - scheduled) * 1000)

    start = time.perf_counter()
    for i in range(int(rate * duration_s)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(bodies[i % len(bodies)], scheduled))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        load.sent += 1
    await asyncio.gather(*in_flight)


async def prime(session: aiohttp.ClientSession, url: str, bodies: list[bytes]) -> Counter:
    """A few requests one at a time before the clock starts: the first lookups after a start are cold
    (connections, Feast registry), which is not what a soak measures. Their statuses are reported apart."""
    statuses: Counter = Counter()
    for body in bodies[:PRIMING_REQUESTS]:
        try:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                await response.read()
                statuses[response.status] += 1
        except (TimeoutError, aiohttp.ClientError):
            statuses[0] += 1
    return statuses


async def event_counters(session: aiohttp.ClientSession, config: FleetConfig) -> dict[str, float]:
    """The gateway's event counters and the monitor consumer's totals, now."""
    async with session.get(f"{config.url('gateway')}/metrics") as response:
        text = await response.text()
    async with session.get(f"{config.url('monitor')}/v1/stats") as response:
        stats = await response.json()
    return {
        "enqueued": metric_sum(text, "mlfleet_gateway_events_enqueued_total"),
        "written": metric_sum(text, "mlfleet_gateway_events_written_total"),
        "dropped_queue_full": metric_sum(text, "mlfleet_gateway_events_dropped_total", reason="queue_full"),
        "dropped_write_failed": metric_sum(text, "mlfleet_gateway_events_dropped_total", reason="write_failed"),
        "monitor_processed": stats["events_processed"],
        "monitor_invalid": stats["events_invalid"],
        "monitor_pending": stats["pending"],
    }


async def drained(session: aiohttp.ClientSession, config: FleetConfig, before: dict[str, float]) -> dict[str, float]:
    """Event counters once the gateway's queue is written and the monitor has counted what was written
    (or after ``DRAIN_TIMEOUT_S``)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        now = await event_counters(session, config)
        gateway_done = now["enqueued"] == now["written"] + now["dropped_write_failed"]
        counted = sum(now[k] - before[k] for k in ("monitor_processed", "monitor_invalid"))
        if (gateway_done and now["monitor_pending"] == 0 and counted >= now["written"] - before["written"]) \
                or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.5)


class Sampler:
    """RSS of every fleet process (with its children), sampled on demand; a process that exited is noted."""

    def __init__(self, fleet: Fleet) -> None:
        self.processes = {child.name: child.process for child in fleet.children}
        if fleet.embedded_redis is not None:
            self.processes["redis"] = fleet.embedded_redis
        self.redis = redis.Redis.from_url(fleet.config.redis_url)
        self.times: list[float] = []
        self.rss: dict[str, list[float | None]] = {name: [] for name in self.processes}
        self.dead: set[str] = set()

    def sample(self, elapsed_s: float) -> None:
        self.times.append(round(elapsed_s, 1))
        for name, process in self.processes.items():
            rss = None
            if process.poll() is None:
                try:
                    rss = round(tree_rss(process.pid), 1)
                except psutil.NoSuchProcess:
                    pass
            if rss is None:
                self.dead.add(name)
            self.rss[name].append(rss)

    def redis_data(self) -> dict:
        """What Redis holds: memory it allocated, the predictions stream's share, the monitor's per-request
        feedback keys (their memory estimated from a sample of each kind), keys per prefix."""
        prefixes: Counter = Counter()
        samples: dict[str, list[bytes]] = {prefix: [] for prefix in FEEDBACK_PREFIXES}
        for key in self.redis.scan_iter(count=10_000):
            prefix = b":".join(key.split(b":")[:3]).decode() if key.startswith(b"mlfleet:") else "feast and other"
            prefixes[prefix] += 1
            if prefix in samples and len(samples[prefix]) < FEEDBACK_SAMPLE:
                samples[prefix].append(key)
        feedback_bytes = 0.0
        for prefix, keys in samples.items():
            if keys:
                sizes = [self.redis.memory_usage(key, samples=0) or 0 for key in keys]
                feedback_bytes += prefixes[prefix] * sum(sizes) / len(sizes)
        return {
            "used_memory_mib": round(self.redis.info("memory")["used_memory"] / MIB, 1),
            "predictions_stream_mib": round((self.redis.memory_usage(PREDICTIONS_STREAM, samples=0) or 0) / MIB, 1),
            "feedback_keys_mib": round(feedback_bytes / MIB, 1),
            "keys": sum(prefixes.values()), "keys_by_prefix": dict(prefixes.most_common(8)),
        }

    def line(self) -> str:
        return "  ".join(f"{name} {'dead' if values[-1] is None else f'{values[-1]:.0f}'}"
                         for name, values in self.rss.items())


def memory_report(sampler: Sampler, start_index: int, bounded_data_growth_mib: float) -> dict:
    """Per service: RSS after the warm-up, at the end, maximum, growth and the verdict on it."""
    report = {}
    middle = (start_index + len(sampler.times) - 1) // 2
    for name, values in sampler.rss.items():
        if name in sampler.dead:
            report[name] = {"died": True, "ok": False}
            continue
        start, end = values[start_index], values[-1]
        growth = end - start
        judged = growth - bounded_data_growth_mib if name == "redis" else growth
        bound = min(MAX_GROWTH_MIB, max(MAX_GROWTH_FRACTION * start, GROWTH_NOISE_MIB))
        report[name] = {
            "start_mib": start, "end_mib": end, "max_mib": max(values[start_index:]), "growth_mib": round(growth, 1),
            "growth_percent": round(100 * growth / start, 1),
            "growth_last_half_mib": round(end - values[middle], 1),
            "judged_growth_mib": round(judged, 1), "bound_mib": round(bound, 1), "ok": judged <= bound,
        }
    return report


async def soak(fleet: Fleet, bodies: list[bytes], *, rate: float, duration_s: float, warmup_s: float) -> dict:
    config = fleet.config
    sampler = Sampler(fleet)
    load = Load()
    url = f"{config.url('gateway')}/v1/models/{MODEL}/predict"
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        primed = await prime(session, url, bodies)
        before = await event_counters(session, config)
        load_average_start = os.getloadavg()
        start_index, redis_start, sent_at_start = None, sampler.redis_data(), 0
        started = time.monotonic()
        driver = asyncio.create_task(drive(session, url, bodies, rate=rate, duration_s=duration_s, load=load))
        sampler.sample(0.0)
        next_progress, window_start = PROGRESS_EVERY_S, 0
        while not driver.done():
            await asyncio.wait({driver}, timeout=started + SAMPLE_EVERY_S * len(sampler.times) - time.monotonic())
            elapsed = time.monotonic() - started
            if driver.done():
                break
            sampler.sample(elapsed)
            if start_index is None and elapsed >= warmup_s:
                start_index, redis_start = len(sampler.times) - 1, await asyncio.to_thread(sampler.redis_data)
                sent_at_start = load.sent
            if elapsed >= next_progress:
                window = load.latencies_ms[window_start:]
                window_start = len(load.latencies_ms)
                print(f"{elapsed:5.0f}s  sent {load.sent:>7,}  answered {load.answered:>7,}  errors {load.errors:>4}  "
                      f"p99 {percentile(window, 99):7.1f} ms   RSS MiB: {sampler.line()}", flush=True)
                next_progress += PROGRESS_EVERY_S
        driver.result()
        load_seconds = time.monotonic() - started
        sampler.sample(load_seconds)
        redis_end = sampler.redis_data()
        after = await drained(session, config, before)
    if start_index is None:  # a run shorter than its warm-up: judge from the first sample
        start_index = 0
    events = {k: after[k] - before[k] for k in after if k != "monitor_pending"}
    published = events["enqueued"] + events["dropped_queue_full"]
    counted = events["monitor_processed"] + events["monitor_invalid"]
    dropped = events["dropped_queue_full"] + events["dropped_write_failed"]
    memory = memory_report(sampler, start_index, sum(redis_end[k] - redis_start[k]
                                                     for k in ("predictions_stream_mib", "feedback_keys_mib")))
    five_xx = sum(n for status, n in load.statuses.items() if status >= 500)
    report = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "rate_per_s": rate, "duration_s": duration_s,
        "warmup_s": sampler.times[start_index], "load_seconds": round(load_seconds, 1),
        "load_average_start": [round(x, 2) for x in load_average_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "priming_statuses": {str(k): v for k, v in sorted(primed.items())},
        "requests": {
            "sent": load.sent, "answered": load.answered,
            "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
            "errors": load.errors, "5xx": five_xx, "achieved_per_s": round(load.statuses[200] / load_seconds, 1),
            "p50_ms": round(percentile(load.latencies_ms, 50), 2),
            "p99_ms": round(percentile(load.latencies_ms, 99), 2),
            "max_ms": round(max(load.latencies_ms, default=float("nan")), 1),
            "send_lag_p99_ms": round(percentile(load.send_lag_ms, 99), 2),
        },
        "events": {
            "published": int(published), "written": int(events["written"]), "counted_by_monitor": int(counted),
            "invalid": int(events["monitor_invalid"]), "dropped_counted": int(dropped),
            "lost": int(published - counted),
        },
        "memory": memory,
        "redis_data": {"start": redis_start, "end": redis_end, "bytes_per_request": {
            kind: round((redis_end[f"{kind}_mib"] - redis_start[f"{kind}_mib"]) * MIB / max(load.sent - sent_at_start, 1))
            for kind in ("predictions_stream", "feedback_keys")}},
        "memory_bounds": {"max_growth_mib": MAX_GROWTH_MIB, "max_growth_fraction": MAX_GROWTH_FRACTION,
                          "growth_noise_mib": GROWTH_NOISE_MIB},
        "rss_mib_series": {"t_s": sampler.times, **sampler.rss},
        "services_died": sorted(sampler.dead),
    }
    report["verdict"] = {
        "no_errors": load.errors == 0,
        "no_service_died": not sampler.dead,
        "memory_bounded": all(m["ok"] for m in memory.values()),
        "events_lost_equal_dropped": report["events"]["lost"] == report["events"]["dropped_counted"],
    }
    report["verdict"]["passed"] = all(report["verdict"].values())
    return report


def record(report: dict) -> None:
    """Put ``report`` under ``soak`` in ``benchmarks/results/reliability.json``, keeping every other key."""
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["soak"] = report
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def summary(report: dict) -> str:
    r, e, data = report["requests"], report["events"], report["redis_data"]
    lines = [
        f"\nsoak: {r['sent']:,} requests at {report['rate_per_s']:g}/s over {report['load_seconds']:.0f} s: "
        f"statuses {r['statuses']}, errors {r['errors']}, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms",
        f"events: {e['published']:,} published, {e['counted_by_monitor']:,} counted by the monitor, "
        f"{e['lost']:,} lost, {e['dropped_counted']:,} counted as dropped",
        f"redis: {data['start']['keys']:,} → {data['end']['keys']:,} keys, predictions stream "
        f"{data['start']['predictions_stream_mib']:.0f} → {data['end']['predictions_stream_mib']:.0f} MiB, feedback keys "
        f"{data['start'].get('feedback_keys_mib', 0):.0f} → {data['end'].get('feedback_keys_mib', 0):.0f} MiB; "
        f"keys at the end {data['end']['keys_by_prefix']}",
        f"RSS (MiB) after {report['warmup_s']:.0f} s warm-up → end (max, growth; bound):",
    ]
    for name, m in report["memory"].items():
        if m.get("died"):
            lines.append(f"  {name:<9} DIED")
            continue
        lines.append(f"  {name:<9} {m['start_mib']:7.1f} → {m['end_mib']:7.1f}  (max {m['max_mib']:7.1f}, "
                     f"{m['growth_mib']:+6.1f}; judged {m['judged_growth_mib']:+6.1f} ≤ {m['bound_mib']:.0f})"
                     f"  {'ok' if m['ok'] else 'FAIL'}")
    verdict = report["verdict"]
    lines.append("verdict: " + ("PASSED" if verdict["passed"] else
                                "FAILED: " + ", ".join(k for k, v in verdict.items() if k != "passed" and not v)))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600, help="Seconds of load (default 600).")
    parser.add_argument("--rate", type=float, default=200, help="Requests per second (default 200).")
    parser.add_argument("--warmup", type=float, default=60,
                        help="Seconds before the starting RSS is taken (default 60).")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the fleet on a plain kill too

    home = Path(tempfile.mkdtemp(prefix="mlfleet-soak-"))
    config = FleetConfig(home=home, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                         **{f"{name}_port": free_port() for name in PORTS})
    with Fleet(config) as fleet:
        dataset = prepare_features(config, seed=7, shift=False, echo=print)
        stable, canary = register_versions(config, dataset, seed=7, echo=print)
        deploy(config, stable, canary, 10.0, print)
        bodies = [orjson.dumps({"instances": [instance], "routing_key": str(instance["user_id"])})
                  for instance in sample_instances(dataset, 1000, seed=1)]
        print(f"soak       {args.rate:g} requests/s for {args.duration:g} s through {config.url('gateway')} "
              f"(RSS from {args.warmup:g} s on; logs {config.logs})", flush=True)
        report = asyncio.run(soak(fleet, bodies, rate=args.rate, duration_s=args.duration, warmup_s=args.warmup))
    record(report)
    print(summary(report))
    print(f"written to {RESULTS}")
    if report["verdict"]["passed"]:
        shutil.rmtree(home, ignore_errors=True)
    else:
        print(f"fleet home kept for its logs: {home}")
        sys.exit(1)


if __name__ == "__main__":
    main()
