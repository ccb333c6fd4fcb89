"""Fixtures of the monitor's tests: its own Redis database, monitor processes, a stream client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import httpx
import pytest
import redis

from tests.conftest import ServiceProcess, start_service

MONITOR_DB = 5
"""The monitor's tests use their own Redis database so other services' events never mix in."""

@pytest.fixture(scope="session")
def monitor_redis_url(redis_url) -> str:
    return urlparse(redis_url)._replace(path=f"/{MONITOR_DB}").geturl()


@pytest.fixture
def stream_client(monitor_redis_url) -> Iterator[redis.Redis]:
    """A client on an emptied monitor database."""
    client = redis.Redis.from_url(monitor_redis_url)
    client.flushdb()
    yield client
    client.close()


MonitorFactory = Callable[..., ServiceProcess]


@pytest.fixture
def run_monitor(monitor_redis_url, stream_client, workdir) -> Iterator[MonitorFactory]:
    """Start monitor processes (settings as keyword arguments); all are stopped after the test."""
    started: list[ServiceProcess] = []

    def run(**settings) -> ServiceProcess:
        service = start_service("monitor", {"redis_url": monitor_redis_url, "block_ms": 200, **settings}, workdir)
        started.append(service)
        return service

    yield run
    for service in started:
        service.stop()


@pytest.fixture
def monitor(run_monitor) -> ServiceProcess:
    return run_monitor()


@pytest.fixture
def client(monitor) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=monitor.url, timeout=10) as http:
        yield http
