"""The demo: data → Feast → two trained versions → registry → canary → traffic → summary; then (``story``,
:mod:`mlfleet.demo.story`) version 2 rolled out and judged on its own, and drift paged."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, UTC

import aiohttp
import httpx
import numpy as np

from mlfleet.client import ClientConfig, Conflict, Fleet
from mlfleet.demo.data import entity_columns, generate_dataset, request_columns, write_offline_source
from mlfleet.demo.train import train_versions
from mlfleet.fleet import FleetConfig

MODEL = "fraud"


@dataclass
class TrafficSummary:
    requests: int = 0
    errors: int = 0
    error_statuses: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    versions: Counter = field(default_factory=Counter)
    variants: Counter = field(default_factory=Counter)
    frauds_flagged: int = 0
    elapsed_s: float = 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def add(self, other: TrafficSummary) -> None:
        """Count ``other``'s requests in this summary too."""
        self.requests += other.requests
        self.errors += other.errors
        self.error_statuses.update(other.error_statuses)
        self.latencies_ms += other.latencies_ms
        self.versions.update(other.versions)
        self.variants.update(other.variants)
        self.frauds_flagged += other.frauds_flagged
        self.elapsed_s += other.elapsed_s


def prepare_features(config: FleetConfig, *, seed: int, shift: bool, echo) -> object:
    dataset = generate_dataset(seed=seed, shift=shift)
    data_dir = (config.home / "data").resolve()
    write_offline_source(dataset, data_dir)
    echo(f"data       {len(dataset.transactions):,} transactions, {dataset.users.user_id.nunique():,} users, "
         f"{dataset.merchants.merchant_id.nunique():,} merchants{' (shifted, post-2020)' if shift else ''} → {data_dir}")
    end = datetime.now(UTC) + timedelta(minutes=1)
    response = httpx.post(f"{config.url('features')}/v1/materialize",
                          json={"start": (end - timedelta(days=3650)).isoformat(), "end": end.isoformat()},
                          headers={"Authorization": f"Bearer {config.admin_key()}"}, timeout=300)
    response.raise_for_status()
    views = ", ".join(f"{v['name']} {v['rows']:,} rows" for v in response.json()["data"])
    echo(f"features   materialized into Redis: {views}")
    return dataset


def fleet_client(config: FleetConfig) -> Fleet:
    """The Python client of this fleet, with its bootstrap admin API key."""
    services = {f"{name}_url": config.url(name) for name in ("registry", "gateway", "monitor", "features")}
    return Fleet(config=ClientConfig(**services, api_key=config.admin_key(), timeout_s=120))


def register_versions(config: FleetConfig, dataset, *, seed: int, echo) -> list[int]:
    with fleet_client(config) as fleet:
        try:
            fleet.create_model(MODEL, description="Card-fraud detection (demo)")
        except Conflict:
            pass
        existing = {v.version for v in fleet.list_versions(MODEL).data}
        numbers = []
        for trained in train_versions(dataset, seed=seed):
            metrics = ", ".join(f"{k} {v:.3f}" for k, v in trained.upload.metadata.metrics.items())
            version = fleet.upload(MODEL, trained.upload, reuse_existing=True).version
            numbers.append(version)
            done = "already registered" if version in existing else "registered"
            echo(f"registry   {trained.name}: {done} as version {version} ({metrics})")
    return numbers


def deploy(config: FleetConfig, stable: int, canary: int, canary_percent: float, echo) -> int:
    """Set the split and return its policy revision once the gateway serves it (after aborting a rollout an earlier
    run left going: it owns the traffic while it runs)."""
    with fleet_client(config) as fleet:
        left = fleet.latest_rollout(MODEL)
        if left is not None and not left.state.finished:
            fleet.abort_rollout(MODEL, left.id, reason="a new demo run sets the traffic")
            echo(f"rollout    aborted #{left.id}, which an earlier demo run left {left.state.value}")
        revision = fleet.set_traffic(MODEL, stable=stable, canary=canary, canary_percent=canary_percent).revision
        echo(f"traffic    stable v{stable}, canary v{canary} at {canary_percent:g} % (policy revision {revision})")
        fleet.wait_until_served(MODEL, revision)
    return revision


async def send_traffic(url: str, instances: list[dict], *, concurrency: int = 16) -> TrafficSummary:
    summary = TrafficSummary()
    queue: asyncio.Queue = asyncio.Queue()
    for instance in instances:
        queue.put_nowait(instance)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            instance = queue.get_nowait()
            body = {"instances": [instance], "routing_key": str(instance["user_id"])}
            started = time.perf_counter()
            async with session.post(f"{url}/v1/models/{MODEL}/predict", json=body) as response:
                payload = await response.json(content_type=None)
            summary.latencies_ms.append((time.perf_counter() - started) * 1000)
            summary.requests += 1
            if response.status != 200:
                summary.errors += 1
                summary.error_statuses[response.status] += 1
                continue
            summary.versions[payload["version"]] += 1
            summary.variants[payload["variant"]] += 1
            summary.frauds_flagged += sum(1 for p in payload["predictions"] if p["label"] == 1)

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    summary.elapsed_s = time.perf_counter() - started
    return summary


def sample_instances(dataset, n: int, seed: int) -> list[dict]:
    rows = dataset.transactions.sample(n=n, replace=len(dataset.transactions) < n, random_state=seed)
    columns = list(entity_columns) + list(request_columns)
    return [
        {c: (int(v) if c in entity_columns else float(v)) for c, v in zip(columns, row)}
        for row in rows[columns].itertuples(index=False)
    ]


def monitor_counts(config: FleetConfig, expected: int, *, since: float, timeout_s: float = 20) -> dict:
    """The monitor's per-version counts since ``since`` (unix seconds; it counts in whole 10 s buckets) once it has
    consumed ``expected`` requests (or the timeout); not the last hour's, which would count an earlier run's too."""
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        response = httpx.get(f"{config.url('monitor')}/v1/models/{MODEL}/metrics",
                             params={"start": since, "end": time.time() + 1}, timeout=5)
        if response.status_code == 200:
            body = response.json()
            if sum(v["requests"] for v in body["versions"]) >= expected:
                break
        time.sleep(0.25)
    return body


def format_summary(summary: TrafficSummary, monitor: dict) -> str:
    lines = [
        "",
        f"Sent {summary.requests:,} predictions in {summary.elapsed_s:.1f}s "
        f"({summary.requests / max(summary.elapsed_s, 1e-9):,.0f}/s), {summary.errors} errors"
        + (f" {dict(summary.error_statuses)}" if summary.errors else ""),
        f"Latency through the gateway: p50 {summary.percentile(50):.1f} ms, p95 {summary.percentile(95):.1f} ms, "
        f"p99 {summary.percentile(99):.1f} ms",
        "Per version (as answered):  " + ", ".join(
            f"v{v}: {n:,} ({n / max(summary.requests, 1):.1%})" for v, n in sorted(summary.versions.items())),
        f"Transactions flagged as fraud: {summary.frauds_flagged:,}",
    ]
    if monitor.get("versions"):
        lines.append("Per version (as the monitor counted from the event stream):  " + ", ".join(
            f"v{v['version']}: {v['requests']:,} requests, p99 {v['latency_ms']['p99']:.1f} ms"
            for v in monitor["versions"]))
    return "\n".join(lines)


def run_demo(config: FleetConfig, *, seed: int, shift: bool, requests: int, canary_percent: float, story: bool = False,
             echo) -> TrafficSummary:
    dataset = prepare_features(config, seed=seed, shift=shift, echo=echo)
    stable, canary = register_versions(config, dataset, seed=seed, echo=echo)
    deploy(config, stable, canary, canary_percent, echo)
    instances = sample_instances(dataset, requests, seed)
    echo(f"traffic    sending {requests:,} predictions through {config.url('gateway')} (16 at a time)…")
    sent_from = time.time()
    summary = asyncio.run(send_traffic(config.url("gateway"), instances))
    echo(format_summary(summary, monitor_counts(config, summary.requests - summary.errors, since=sent_from)))
    if story:
        from mlfleet.demo.story import page_on_drift, roll_out

        echo("")
        roll_out(config, canary, sample_instances(dataset, 2_000, seed + 1), echo)
        page_on_drift(config, seed=seed, echo=echo)
    return summary
