"""The registry's rollout metrics (docs/metrics.md) after a manual and an automatic rollback.

The registry runs in process with real Triton and Redis; the monitor is a stub that reports a
canary failing a quarter of its requests, so the controller rolls it back on its first verdict.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlfleet.runtime.processes import free_port
from tests.observability.metrics_doc import documented
from tests.observability.test_metrics import ROLLOUT_ONLY, check
from tests.registry.harness import running_registry
from tests.registry.test_rollouts_api import eventually, two_versions

FAILING_CANARY = {"versions": [{"version": 1, "requests": 200, "errors": 0},
                               {"version": 2, "requests": 200, "errors": 50}]}


class StubMonitor(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps(FAILING_CANARY).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def monitor_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), StubMonitor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def samples(text: str, family: str) -> dict[frozenset, float]:
    return {frozenset(s.labels.items()): s.value for f in text_string_to_metric_families(text) if f.name == family
            for s in f.samples if not s.name.endswith("_created")}


async def test_rollbacks_and_steps_are_exported(sqlite_settings, monitor_url, trained, trained_v2):
    settings = sqlite_settings.model_copy(update={"monitor_url": monitor_url, "rollout_tick_s": 0.1})
    async with running_registry(settings) as client:
        name = await two_versions(client, trained, trained_v2)
        rollouts = f"/v1/models/{name}/rollouts"
        started = await client.post(rollouts, json={"candidate": 2, "steps": [10, 100], "interval_s": 600})
        assert started.status_code == 201, started.text
        step = samples((await client.get("/metrics")).text, "mlfleet_registry_rollout_step_percent")
        assert step == {frozenset({("model", name)}): 10.0}
        assert (await client.post(f"/v1/models/{name}/rollback")).status_code == 200

        body = {"candidate": 2, "steps": [10, 100], "interval_s": 0.2, "min_requests": 1}
        rollout_id = (await client.post(rollouts, json=body)).json()["id"]

        async def rolled_back() -> bool:
            return (await client.get(f"{rollouts}/{rollout_id}")).json()["state"] == "rolled_back"

        await eventually(rolled_back)

        async def counted() -> bool:  # the rollback is committed (and visible) just before it is counted
            text = (await client.get("/metrics")).text
            return samples(text, "mlfleet_registry_rollout_events").get(frozenset({("event", "rolled_back")})) == 2.0

        await eventually(counted)
        text = (await client.get("/metrics")).text

    families = {f.name: (f.type, [frozenset(s.labels) for s in f.samples]) for f in text_string_to_metric_families(text)}
    check({n: spec for n, spec in documented()["registry"].items() if n in ROLLOUT_ONLY}, families, "registry")
    assert samples(text, "mlfleet_registry_rollbacks") == {
        frozenset({("model", name), ("trigger", "manual")}): 1.0,
        frozenset({("model", name), ("trigger", "automatic")}): 1.0,
    }
    assert samples(text, "mlfleet_registry_rollout_step_percent") == {frozenset({("model", name)}): 0.0}
    assert samples(text, "mlfleet_registry_rollout_verdicts")[frozenset({("verdict", "fail")})] == 1.0
    events = samples(text, "mlfleet_registry_rollout_events")
    assert (events[frozenset({("event", "started")})], events[frozenset({("event", "rolled_back")})]) == (2.0, 2.0)
