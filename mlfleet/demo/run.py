"""The demo: data → Feast → two trained versions → registry → canary → traffic → summary."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import httpx
import numpy as np

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


def prepare_features(config: FleetConfig, *, seed: int, shift: bool, echo) -> object:
    dataset = generate_dataset(seed=seed, shift=shift)
    data_dir = (config.home / "data").resolve()
    write_offline_source(dataset, data_dir)
    echo(f"data       {len(dataset.transactions):,} transactions, {dataset.users.user_id.nunique():,} users, "
         f"{dataset.merchants.merchant_id.nunique():,} merchants{' (shifted, post-2020)' if shift else ''} → {data_dir}")
    end = datetime.now(timezone.utc) + timedelta(minutes=1)
    response = httpx.post(f"{config.url('features')}/v1/materialize",
                          json={"start": (end - timedelta(days=3650)).isoformat(), "end": end.isoformat()}, timeout=300)
    response.raise_for_status()
    views = ", ".join(f"{v['name']} {v['rows']:,} rows" for v in response.json()["data"])
    echo(f"features   materialized into Redis: {views}")
    return dataset


def register_versions(config: FleetConfig, dataset, *, seed: int, echo) -> list[int]:
    registry = httpx.Client(base_url=config.url("registry"), timeout=120, headers={"X-Mlfleet-Actor": "demo"})
    created = registry.post("/v1/models", json={"name": MODEL, "description": "Card-fraud detection (demo)"})
    if created.status_code not in (201, 409):
        created.raise_for_status()
    existing = {v["sha256"]: v["version"] for v in registry.get(f"/v1/models/{MODEL}/versions").json()["data"]}
    numbers = []
    for trained in train_versions(dataset, seed=seed):
        digest = hashlib.sha256(trained.onnx).hexdigest()
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in trained.metadata["metrics"].items())
        if digest in existing:
            numbers.append(existing[digest])
            echo(f"registry   {trained.name}: already registered as version {existing[digest]} ({metrics})")
            continue
        response = registry.post(
            f"/v1/models/{MODEL}/versions",
            files={"artifact": ("model.onnx", trained.onnx, "application/octet-stream")},
            data={"metadata": json.dumps(trained.metadata)},
        )
        if response.status_code != 201:
            raise RuntimeError(f"registering {trained.name} failed: {response.status_code} {response.text}")
        numbers.append(response.json()["version"])
        echo(f"registry   {trained.name}: registered as version {numbers[-1]} ({metrics})")
    return numbers


def deploy(config: FleetConfig, stable: int, canary: int, canary_percent: float, echo) -> int:
    response = httpx.put(f"{config.url('registry')}/v1/models/{MODEL}/traffic",
                         json={"stable": stable, "canary": canary, "canary_percent": canary_percent},
                         headers={"X-Mlfleet-Actor": "demo"}, timeout=120)
    response.raise_for_status()
    revision = response.json()["revision"]
    echo(f"traffic    stable v{stable}, canary v{canary} at {canary_percent:g} % (policy revision {revision})")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        routes = httpx.get(f"{config.url('gateway')}/v1/routes", timeout=5).json()
        if any(m["model"] == MODEL and m["revision"] >= revision for m in routes["table"]["models"]):
            return revision
        time.sleep(0.1)
    raise RuntimeError("the gateway did not pick up the new traffic policy within 30 s")


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


def monitor_counts(config: FleetConfig, expected: int, timeout_s: float = 20) -> dict:
    """The monitor's per-version counts once it has consumed ``expected`` requests (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        response = httpx.get(f"{config.url('monitor')}/v1/models/{MODEL}/metrics", params={"window_s": 3600}, timeout=5)
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


def run_demo(config: FleetConfig, *, seed: int, shift: bool, requests: int, canary_percent: float, echo) -> TrafficSummary:
    dataset = prepare_features(config, seed=seed, shift=shift, echo=echo)
    stable, canary = register_versions(config, dataset, seed=seed, echo=echo)
    deploy(config, stable, canary, canary_percent, echo)
    instances = sample_instances(dataset, requests, seed)
    echo(f"traffic    sending {requests:,} predictions through {config.url('gateway')} (16 at a time)…")
    summary = asyncio.run(send_traffic(config.url("gateway"), instances))
    echo(format_summary(summary, monitor_counts(config, summary.requests - summary.errors)))
    return summary
