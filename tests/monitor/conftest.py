"""Fixtures of the monitor's tests: its own Redis database, monitor processes, a stream client."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import redis

from tests.conftest import ServiceProcess, start_service, stop_services, write_key_file
from tests.monitor.demo_model import DemoModel, demo_model
from tests.monitor.receiver import Receiver

MONITOR_DB = 5
"""The monitor's tests use their own Redis database so other services' events never mix in."""
DEMO_MODEL = "fraud"

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
    stop_services(started)


@pytest.fixture
def monitor(run_monitor) -> ServiceProcess:
    return run_monitor()


@pytest.fixture
def client(monitor) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=monitor.url, timeout=10) as http:
        yield http


@dataclass(frozen=True)
class RegisteredDemo:
    """A real registry process holding the demo-like model ``fraud`` v1 with its reference profile."""

    registry: ServiceProcess
    model: str
    version: int
    demo: DemoModel
    viewer_key_file: Path
    """A viewer key of that registry, as the monitor reads it (``registry_api_key_file``)."""
    deployer_key: str
    """A deployer key of that registry: feedback needs one."""

    def monitor_settings(self) -> dict[str, object]:
        return {"registry_url": self.registry.url, "registry_api_key_file": self.viewer_key_file}

    def deployer(self) -> dict[str, str]:
        """The ``Authorization`` header of a deployer, as feedback callers send it."""
        return {"Authorization": f"Bearer {self.deployer_key}"}


@pytest.fixture(scope="session")
def demo_registry(workdir, redis_url, triton, admin_key) -> Iterator[RegisteredDemo]:
    home = workdir / "monitor-registry"
    admin_file = write_key_file(home / "secrets" / "admin.key", admin_key)
    registry = start_service("registry", {"triton_grpc_url": triton.grpc_url, "redis_url": redis_url,
                                          "bootstrap_admin_key_file": admin_file}, home)
    demo = demo_model()
    try:
        with httpx.Client(base_url=registry.url, timeout=120, headers={"Authorization": f"Bearer {admin_key}"}) as http:
            http.post("/v1/models", json={"name": DEMO_MODEL, "gates": {"min_auc": None, "min_accuracy": None}}
                      ).raise_for_status()
            response = http.post(f"/v1/models/{DEMO_MODEL}/versions", files={"artifact": ("model.onnx", demo.onnx)},
                                 data={"metadata": json.dumps(demo.metadata)})
            response.raise_for_status()
            http.put(f"/v1/models/{DEMO_MODEL}/traffic", json={"stable": 1}).raise_for_status()
            viewer = http.post("/v1/keys", json={"name": "monitor", "role": "viewer"})
            viewer.raise_for_status()
            deployer = http.post("/v1/keys", json={"name": "labeller", "role": "deployer"})
            deployer.raise_for_status()
        viewer_file = write_key_file(home / "secrets" / "viewer.key", viewer.json()["key"])
        yield RegisteredDemo(registry, DEMO_MODEL, response.json()["version"], demo, viewer_file, deployer.json()["key"])
    finally:
        registry.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()
