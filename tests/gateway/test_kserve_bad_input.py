"""A tensor the model cannot take is the caller's error: 400 problem+json with KServe's ``error``, never a 5xx."""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.conftest import MODEL


@pytest.mark.parametrize("body", [
    {"inputs": [{"name": "input", "shape": [1, 0], "datatype": "FP32", "data": []}]},
    {"inputs": [{"name": "input", "shape": [1, 7], "datatype": "FP32", "data": [1.0] * 7}]},
])
def test_a_tensor_of_the_wrong_width_is_a_client_error(fleet, body):
    response = httpx.post(f"{fleet.gateway.url}/v2/models/{MODEL}/infer", json=body, timeout=10)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "triton-rejected"
    assert problem["error"] == problem["detail"] and "input" in problem["detail"].lower()


def test_an_empty_body_is_a_client_error(fleet):
    response = httpx.post(f"{fleet.gateway.url}/v2/models/{MODEL}/infer", content=b"", timeout=10)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"
