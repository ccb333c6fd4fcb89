"""Rollout fixtures: registry, monitor and two gateways as real processes on the real Triton, with their
own Redis database (events, aggregates and features never mix with other tests'), a webhook receiver,
and a client-traffic generator that counts every failed request."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import httpx
import pytest
import redis

from mlfleet.runtime.processes import free_port, wait_until
from tests.conftest import ServiceProcess, ServiceSpec, start_services, stop_services, write_key_file
from tests.gateway.conftest import USERS, apply_user_stats, bearer

ROLLOUTS_DB = 8
"""The rollout tests' Redis database."""
PUBLIC_URL = "https://mlfleet.example.test/registry"
"""The registry's ``public_url``: links in webhook bodies start with it."""


class WebhookReceiver:
    """An HTTP endpoint that records the JSON it is posted; it answers 503 to the first ``fail_first`` posts."""

    def __init__(self, fail_first: int = 1) -> None:
        self.bodies: list[dict] = []
        self.attempts = 0
        self._fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.attempts += 1
                if receiver.attempts <= receiver._fail_first:
                    self.send_response(503)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def events(self, model: str) -> list[str]:
        return [b["metadata"]["event_type"] for b in self.bodies if b["namespace"] == model]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True)
class RolloutFleet:
    registry: ServiceProcess
    monitor: ServiceProcess
    gateways: list[ServiceProcess]
    admin_key: str
    webhooks: WebhookReceiver
    registry_settings: dict[str, object]
    """What the registry was started with (its database included); replicas start from it."""

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.registry.url, timeout=120, headers=bearer(self.admin_key))


@pytest.fixture(scope="session")
def rollouts_redis_url(redis_url) -> str:
    url = urlparse(redis_url)._replace(path=f"/{ROLLOUTS_DB}").geturl()
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(scope="session")
def rollout_fleet(workdir, rollouts_redis_url, triton, admin_key) -> Iterator[RolloutFleet]:
    home = workdir / "rollouts"
    feast_dir = home / "feast"
    apply_user_stats(feast_dir, rollouts_redis_url)
    webhooks = WebhookReceiver(fail_first=1)
    started: dict[str, ServiceProcess] = {}
    try:
        monitor_port = free_port()
        registry_settings = {
            "database_url": f"sqlite:///{home / 'registry' / 'registry.db'}",
            "triton_grpc_url": triton.grpc_url, "redis_url": rollouts_redis_url,
            "monitor_url": f"http://127.0.0.1:{monitor_port}",
            "bootstrap_admin_key_file": write_key_file(home / "secrets" / "admin.key", admin_key),
            "rollout_tick_s": 0.2, "webhook_urls": webhooks.url, "webhook_backoff_s": 0.2, "public_url": PUBLIC_URL,
        }
        started.update(start_services({
            "monitor": ServiceSpec("monitor", {"redis_url": rollouts_redis_url, "block_ms": 100,
                                               "group": f"rollouts-{uuid.uuid4().hex[:8]}"}, home / "monitor",
                                   port=monitor_port),
            "registry": ServiceSpec("registry", registry_settings, home / "registry"),
        }))
        registry, monitor = started["registry"], started["monitor"]
        gateway_settings = {
            "registry_url": registry.url, "triton_grpc_url": triton.grpc_url, "triton_http_url": triton.http_url,
            "redis_url": rollouts_redis_url, "feast_dir": feast_dir, "policy_poll_s": 30,
        }
        started.update(start_services({name: ServiceSpec("gateway", gateway_settings, home / name)
                                       for name in ("gateway-a", "gateway-b")}))
        gateways = [started["gateway-a"], started["gateway-b"]]
        yield RolloutFleet(registry, monitor, gateways, admin_key, webhooks, registry_settings)
    finally:
        stop_services(started.values())
        webhooks.close()


@dataclass
class Traffic:
    """Predictions sent continuously through one gateway, from a background thread."""

    gateway_url: str
    model: str
    pause_s: float = 0.005
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    versions: Counter = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _run(self) -> None:
        rng = random.Random(1)
        with httpx.Client(base_url=self.gateway_url, timeout=30) as client:
            while not self._stop.is_set():
                body = {"instances": [{"user_id": rng.choice(USERS), "amount": rng.uniform(1, 900)}],
                        "routing_key": uuid.uuid4().hex}
                try:
                    response = client.post(f"/v1/models/{self.model}/predict", json=body)
                    if response.status_code == 200:
                        self.versions[response.json()["version"]] += 1
                    else:
                        self.failures.append(f"{response.status_code} {response.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.sent += 1
                time.sleep(self.pause_s)


def wait_for_rollout(client: httpx.Client, model: str, rollout_id: int, states: set[str], timeout_s: float) -> dict:
    """The rollout once its state is one of ``states``."""
    found: dict = {}

    def reached() -> bool:
        found.update(client.get(f"/v1/models/{model}/rollouts/{rollout_id}").raise_for_status().json())
        return found["state"] in states

    wait_until(reached, timeout_s=timeout_s, interval_s=0.2, what=f"rollout {rollout_id} of {model} in {states}")
    return found


def served_revision(gateway: ServiceProcess) -> int:
    return httpx.get(f"{gateway.url}/v1/routes", timeout=5).json()["revision"]


def wait_until_served(gateways: list[ServiceProcess], model: str, revision: int) -> None:
    for gateway in gateways:
        wait_until(lambda gateway=gateway: served_revision(gateway) >= revision, timeout_s=15,
                   what=f"revision {revision} on {gateway.url}")
