"""The registry as its own uvicorn process, driven over real HTTP."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.conftest import start_service, write_key_file
from tests.registry.factories import model_name, upload_parts, version_metadata
from tests.registry.harness import bearer


@pytest.fixture
def registry_process(tmp_path, triton, redis_url, admin_key):
    key_file = write_key_file(tmp_path / "secrets" / "admin.key", admin_key)
    service = start_service("registry", {"triton_grpc_url": triton.grpc_url, "redis_url": redis_url,
                                         "bootstrap_admin_key_file": key_file}, tmp_path)
    yield service
    service.stop()


def test_the_service_process_registers_and_serves_a_policy(registry_process, trained, tmp_path, admin_key):
    name = model_name()
    with httpx.Client(base_url=registry_process.url, timeout=120, headers=bearer(admin_key)) as client:
        assert client.get("/v1/auth/whoami").json() == {"name": "bootstrap-admin", "role": "admin"}
        assert client.get("/readyz").json()["checks"] == {"database": True, "triton": True}
        assert client.post("/v1/models", json={"name": name}).status_code == 201
        version = client.post(f"/v1/models/{name}/versions", files=upload_parts(trained.onnx, version_metadata()))
        assert version.status_code == 201, version.text
        assert (tmp_path / "registry.db").exists()
        assert (tmp_path / "artifacts" / f"{hashlib.sha256(trained.onnx).hexdigest()}.onnx").read_bytes() == trained.onnx
        assert client.put(f"/v1/models/{name}/traffic", json={"stable": 1}).status_code == 200
        assert [m["model"] for m in client.get("/v1/routes").json()["models"]] == [name]
        metrics = client.get("/metrics").text
        assert 'mlfleet_registry_versions_total{outcome="registered"} 1.0' in metrics
        assert 'mlfleet_registry_triton_load_seconds_count{outcome="loaded"} 1.0' in metrics
        assert "/v1/models/{model}/versions" in client.get("/openapi.json").json()["paths"]
    assert admin_key not in registry_process.log_file.read_text(), "the key must never be logged"
