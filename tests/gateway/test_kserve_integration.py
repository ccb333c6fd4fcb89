"""The official ``tritonclient.http`` client works unchanged against the gateway's /v2; naming a version to infer
pins it, so it needs a deployer's key like ``X-Mlfleet-Version``."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as tritonhttp
from tritonclient.utils import InferenceServerException

from services.gateway.router import bucket_of
from tests.gateway.conftest import MODEL, bearer

ROWS = np.array([[120.0, 80.0, 3], [900.0, 20.0, 31]], dtype=np.float32)


def gateway_address(fleet) -> str:
    return fleet.gateway.url.removeprefix("http://")


def probabilities(client: tritonhttp.InferenceServerClient, *, version: str = "", headers=None) -> np.ndarray:
    tensor = tritonhttp.InferInput("input", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=True)
    wanted = [tritonhttp.InferRequestedOutput("probabilities", binary_data=True)]
    return client.infer(MODEL, [tensor], model_version=version, outputs=wanted, headers=headers).as_numpy("probabilities")


@pytest.fixture
def via_gateway(fleet):
    client = tritonhttp.InferenceServerClient(gateway_address(fleet))
    yield client
    client.close()


@pytest.fixture
def direct(triton):
    client = tritonhttp.InferenceServerClient(triton.http_url)
    yield client
    client.close()


@pytest.mark.parametrize("version", ["1", "2"])
def test_binary_infer_through_gateway_equals_triton_directly(fleet, via_gateway, direct, version):
    pinned = probabilities(via_gateway, version=version, headers=bearer(fleet.admin_key))
    np.testing.assert_array_equal(pinned, probabilities(direct, version=version))


def new_key(fleet, role: str) -> str:
    response = httpx.post(f"{fleet.registry.url}/v1/keys", json={"name": f"kserve-{role}", "role": role},
                          headers=bearer(fleet.admin_key), timeout=10)
    response.raise_for_status()
    return response.json()["key"]


def test_versioned_infer_needs_a_deployer_key(fleet, via_gateway, direct):
    """401 without a valid key and 403 below deployer, as problem+json with KServe's ``error``; tritonclient
    reports both. A deployer's key (sent with tritonclient's ``headers=``) is served."""
    for headers, status in ((None, "401"), (bearer("mlf_not-a-key"), "401"), (bearer(new_key(fleet, "viewer")), "403")):
        with pytest.raises(InferenceServerException) as caught:
            probabilities(via_gateway, version="1", headers=headers)
        assert caught.value.status() == status
        assert "key" in caught.value.message() or "role" in caught.value.message()
    raw = httpx.post(f"{fleet.gateway.url}/v2/models/{MODEL}/versions/1/infer", timeout=10,
                     json={"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
    assert (raw.status_code, raw.headers["content-type"]) == (401, "application/problem+json")
    assert raw.json()["code"] == "unauthorized" and raw.json()["error"] == raw.json()["detail"]
    assert raw.headers["www-authenticate"].startswith("Bearer")
    deployer = bearer(new_key(fleet, "deployer"))
    np.testing.assert_array_equal(probabilities(via_gateway, version="2", headers=deployer),
                                  probabilities(direct, version="2"))


def test_unversioned_infer_is_routed_by_the_routing_key(via_gateway, direct):
    for key in ("alice", "bob", "carol", "dave", "erin", "frank"):
        expected_version = "2" if bucket_of(MODEL, key) < 50 else "1"
        got = probabilities(via_gateway, headers={"X-Mlfleet-Routing-Key": key})
        np.testing.assert_array_equal(got, probabilities(direct, version=expected_version))


def test_metadata_readiness_and_config_pass_through(via_gateway, direct):
    assert via_gateway.is_server_live() and via_gateway.is_server_ready()
    assert via_gateway.get_server_metadata() == direct.get_server_metadata()
    assert via_gateway.get_model_metadata(MODEL) == direct.get_model_metadata(MODEL)
    assert via_gateway.get_model_metadata(MODEL, "2") == direct.get_model_metadata(MODEL, "2")
    assert via_gateway.is_model_ready(MODEL, "1")
    assert via_gateway.get_model_config(MODEL) == direct.get_model_config(MODEL)


def test_models_outside_the_routing_table_are_404(via_gateway, gateway_client):
    with pytest.raises(InferenceServerException) as caught:
        via_gateway.get_model_metadata("not-routed")
    assert caught.value.status() == "404"
    assert "not-routed" in caught.value.message()
    response = gateway_client.get(f"/v2/models/{MODEL}/versions/9/ready")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
