"""Dependencies that are down: Triton refuses the change, Redis only loses the announcement."""

from __future__ import annotations

import httpx
import pytest

from services.common.errors import BackendUnavailable
from services.registry.monitor_client import MonitorClient
from tests.registry.factories import model_name, upload_parts, version_metadata
from tests.registry.harness import dead_address, running_registry
from tests.registry.test_api import assert_problem


async def _model_with_version(client, onnx_bytes: bytes) -> str:
    name = model_name()
    assert (await client.post("/v1/models", json={"name": name})).status_code == 201
    upload = await client.post(f"/v1/models/{name}/versions", files=upload_parts(onnx_bytes, version_metadata()))
    assert upload.status_code == 201, upload.text
    return name


async def test_triton_down_refuses_the_change_and_keeps_the_policy(sqlite_settings, trained):
    settings = sqlite_settings.model_copy(update={"triton_grpc_url": dead_address()})
    async with running_registry(settings) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, "Triton is reported, not gating: the registry serves what needs no load"
        assert ready.json() == {"status": "ready", "checks": {"database": True, "triton": False},
                                "degraded": ["triton"]}
        assert (await client.get("/healthz")).status_code == 200

        name = await _model_with_version(client, trained.onnx)
        response = await client.put(f"/v1/models/{name}/traffic", json={"stable": 1})
        assert_problem(response, 503, "backend-unavailable")
        assert (await client.get(f"/v1/models/{name}/traffic")).json()["revision"] == 0
        assert [e["action"] for e in (await client.get("/v1/audit", params={"model": name})).json()["data"]] == [
            "version.register", "model.create",
        ]


async def test_redis_down_still_persists_the_change_and_counts_the_lost_message(sqlite_settings, trained):
    settings = sqlite_settings.model_copy(update={"redis_url": f"redis://{dead_address()}/0"})
    async with running_registry(settings) as client:
        assert (await client.get("/readyz")).status_code == 200
        name = await _model_with_version(client, trained.onnx)
        response = await client.put(f"/v1/models/{name}/traffic", json={"stable": 1})
        assert response.status_code == 200, response.text
        assert (await client.get(f"/v1/models/{name}/traffic")).json()["stable"] == 1
        metrics = (await client.get("/metrics")).text
        assert 'mlfleet_registry_policy_publishes_total{outcome="failed"} 1.0' in metrics


async def test_a_corrupted_artifact_is_never_loaded(sqlite_settings, trained):
    async with running_registry(sqlite_settings) as client:
        name = await _model_with_version(client, trained.onnx)
        sha256 = (await client.get(f"/v1/models/{name}/versions/1")).json()["sha256"]
        path = sqlite_settings.artifacts_root / f"{sha256}.onnx"
        path.chmod(0o644)
        path.write_bytes(b"tampered")
        assert_problem(await client.put(f"/v1/models/{name}/traffic", json={"stable": 1}), 500, "artifact-corrupted")
        assert_problem(await client.get(f"/v1/models/{name}/versions/1/artifact"), 500, "artifact-corrupted")


async def test_a_monitor_that_does_not_answer_is_named_with_the_reason_it_failed():
    """A stalled monitor times out with an exception that prints as nothing: the rollout's hold reason ended in
    "is not reachable: " and said no more."""
    client = MonitorClient("http://monitor.test", timeout_s=1)

    def stalled(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("", request=request)

    client._http = httpx.AsyncClient(base_url="http://monitor.test", transport=httpx.MockTransport(stalled))
    with pytest.raises(BackendUnavailable, match=r"the monitor at http://monitor.test is not reachable: ReadTimeout$"):
        await client.window("fraud", start=0, end=10)
    await client._http.aclose()
