"""The monitor outlives its Redis: not ready while it is gone, consuming again once it is back."""

from __future__ import annotations

import httpx
import redis

from mlfleet.runtime.processes import free_port, stop_process, wait_until
from mlfleet.runtime.redis_server import start_redis
from services.common.redis import PREDICTIONS_STREAM
from tests.conftest import start_service
from tests.monitor.factories import mixed_events, publish


def status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def test_monitor_survives_redis_going_away(workdir):
    port = free_port()
    redis_dir = workdir / f"outage-redis-{port}"
    server = start_redis(port, redis_dir)
    url = f"redis://127.0.0.1:{port}/0"
    monitor = start_service("monitor", {"redis_url": url, "block_ms": 200, "retry_max_s": 0.5}, workdir)
    try:
        assert status(f"{monitor.url}/readyz") == 200
        stop_process(server)
        wait_until(lambda: status(f"{monitor.url}/readyz") == 503, timeout_s=30, what="not ready without redis")
        assert status(f"{monitor.url}/healthz") == 200
        stats = httpx.get(f"{monitor.url}/v1/stats", timeout=10)
        assert (stats.status_code, stats.headers["content-type"]) == (503, "application/problem+json")
        assert stats.json()["code"] == "backend-unavailable"
        assert monitor.process.poll() is None

        server = start_redis(port, redis_dir)
        wait_until(lambda: status(f"{monitor.url}/readyz") == 200, timeout_s=30, what="ready again")
        client = redis.Redis.from_url(url)
        publish(client, PREDICTIONS_STREAM, mixed_events(40))
        client.close()
        wait_until(lambda: httpx.get(f"{monitor.url}/v1/stats", timeout=10).json()["events_processed"] == 40,
                   timeout_s=30, what="events counted after the outage")
    finally:
        monitor.stop()
        stop_process(server)
