"""Every refusal is problem+json with the exact status and code; never a 500."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mlfleet.runtime.processes import wait_until
from tests.conftest import ServiceProcess, start_service
from tests.gateway.conftest import MODEL, bearer, events_of, register, train_onnx

PROBLEM = "application/problem+json"
PREDICT = f"/v1/models/{MODEL}/predict"


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert (body["status"], body["code"]) == (status, code)
    return body


def test_unknown_model_is_404(gateway_client):
    body = assert_problem(gateway_client.post("/v1/models/nope/predict", json={"instances": [{"user_id": 1, "amount": 1}]}),
                          404, "model-not-found")
    assert "nope" in body["detail"]


def test_malformed_json_is_400(gateway_client):
    response = gateway_client.post(PREDICT, content=b'{"instances": [', headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "bad-request")


@pytest.mark.parametrize("payload", [{"instances": "x"}, {"instances": []}, {"instances": [1]}, {"rows": []}])
def test_wrong_request_shape_is_422(gateway_client, payload):
    assert_problem(gateway_client.post(PREDICT, json=payload), 422, "invalid-input")


def test_non_numeric_field_is_422_naming_it(gateway_client):
    instances = [{"user_id": 1, "amount": 1.0}, {"user_id": 1, "amount": "lots"}]
    body = assert_problem(gateway_client.post(PREDICT, json={"instances": instances}), 422, "invalid-input")
    assert body["field"] == "amount" and body["instance_index"] == 1
    assert body["instance"] == PREDICT, "RFC 9457's `instance` is the occurrence's URI, not the instance's index"


def test_missing_request_field_is_422_naming_it(gateway_client):
    body = assert_problem(gateway_client.post(PREDICT, json={"instances": [{"user_id": 1}]}), 422, "invalid-input")
    assert body["field"] == "amount"


def test_missing_features_are_422_naming_features_and_entity(gateway_client):
    body = assert_problem(gateway_client.post(PREDICT, json={"instances": [{"user_id": 9999, "amount": 3}]}),
                          422, "missing-features")
    assert body["missing"] == [{"instance": 0, "entity": {"user_id": 9999},
                                "features": ["user_stats:avg_amount_30d", "user_stats:txn_count_7d"]}]


def test_oversized_body_is_413_by_declared_and_streamed_size(gateway_client):
    big = b'{"instances": [' + b'{"user_id": 1, "amount": 1},' * 1000 + b'{"user_id": 1, "amount": 1}]}'
    assert_problem(gateway_client.post(PREDICT, content=big, headers={"Content-Type": "application/json"}),
                   413, "payload-too-large")
    chunked = gateway_client.post(PREDICT, content=iter([big[:8000], big[8000:]]), headers={"Content-Type": "application/json"})
    assert "content-length" not in chunked.request.headers
    assert_problem(chunked, 413, "payload-too-large")


def test_wrong_content_type_is_415(gateway_client):
    assert_problem(gateway_client.post(PREDICT, content=b"instances=1", headers={"Content-Type": "text/plain"}),
                   415, "unsupported-media-type")


def test_pinning_a_version_outside_the_policy_is_404(gateway_client):
    response = gateway_client.post(PREDICT, headers={"X-Mlfleet-Version": "77"},
                                   json={"instances": [{"user_id": 1, "amount": 1}]})
    assert_problem(response, 404, "version-not-found")


def test_too_many_instances_is_422(cut_off_gateway):
    response = httpx.post(cut_off_gateway.url + PREDICT, json={"instances": [{"user_id": 1, "amount": 1}] * 3}, timeout=10)
    assert_problem(response, 422, "invalid-input")


def test_unreachable_triton_is_503_within_the_timeout(cut_off_gateway, fleet):
    with httpx.Client(base_url=cut_off_gateway.url, timeout=30, headers=bearer(fleet.admin_key)) as client:
        response = client.post(PREDICT, headers={"X-Mlfleet-Version": "1"}, json={"instances": [{"user_id": 1, "amount": 1}]})
        assert_problem(response, 503, "backend-unavailable")
        assert_problem(client.get("/v2/health/live"), 503, "backend-unavailable")
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"routing_table": True, "triton": False, "redis": True}


def test_pinning_needs_a_deployer_key(fleet):
    """Only pinned requests are checked: 401 without a valid key, 403 below the deployer role."""
    body = {"instances": [{"user_id": 1, "amount": 1}]}
    pin = {"X-Mlfleet-Version": "1"}
    with httpx.Client(base_url=fleet.gateway.url, timeout=30) as client:
        assert client.post(PREDICT, json=body).status_code == 200
        missing = assert_problem(client.post(PREDICT, headers=pin, json=body), 401, "unauthorized")
        assert "Bearer" in missing["detail"]
        assert_problem(client.post(PREDICT, headers=pin | bearer("mlf_not-a-key"), json=body), 401, "unauthorized")
        assert_problem(client.post(PREDICT, headers=pin | {"Authorization": "Basic abc"}, json=body), 401, "unauthorized")
        viewer = httpx.post(f"{fleet.registry.url}/v1/keys", json={"name": "analyst", "role": "viewer"},
                            headers=bearer(fleet.admin_key), timeout=10).json()["key"]
        forbidden = assert_problem(client.post(PREDICT, headers=pin | bearer(viewer), json=body), 403, "forbidden")
        assert forbidden["required_role"] == "deployer"
        deployer = httpx.post(f"{fleet.registry.url}/v1/keys", json={"name": "ml-engineer", "role": "deployer"},
                              headers=bearer(fleet.admin_key), timeout=10).json()["key"]
        pinned = client.post(PREDICT, headers=pin | bearer(deployer), json=body)
        assert pinned.status_code == 200, pinned.text
        assert pinned.json()["variant"] == "pinned"


def test_an_entity_key_feast_cannot_encode_fails_only_its_own_request(fleet):
    """Requests sent together share micro-batches; the bad key is refused before its request joins one."""
    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=fleet.gateway.url, timeout=30) as client:
            bodies = [{"instances": [{"user_id": "not-a-number" if i == 3 else 1 + i % 40, "amount": 12.5}],
                       "routing_key": "same-version"} for i in range(12)]
            return await asyncio.gather(*(client.post(PREDICT, json=body) for body in bodies))

    answers = asyncio.run(together())
    body = assert_problem(answers[3], 422, "invalid-input")
    assert body["field"] == "user_id"
    assert [a.status_code for i, a in enumerate(answers) if i != 3] == [200] * 11


SLOW = "gw-slow"


@pytest.fixture(scope="module")
def narrow_gateway(fleet, workdir) -> Iterator[ServiceProcess]:
    """A gateway that runs one batch per version and queues at most one request behind it, in front of a version
    that takes 300 ms per batch."""
    register(fleet.registry.url, SLOW, {1: train_onnx(1)}, key=fleet.admin_key, faults={1: {"delay_ms": 300}}, stable=1)
    settings = fleet.gateway_settings | {"batch_max_queued": 1, "batch_max_in_flight": 1}
    gateway = start_service("gateway", settings, workdir / "gateway-it" / "narrow")
    yield gateway
    gateway.stop()


def shed_total(gateway_url: str) -> float:
    match = re.search(rf'^mlfleet_gateway_shed_total{{model="{SLOW}"}} (\S+)$', httpx.get(f"{gateway_url}/metrics").text,
                      re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_an_overloaded_version_sheds_requests_at_once_with_retry_after(narrow_gateway, redis_url):
    url = f"{narrow_gateway.url}/v1/models/{SLOW}/predict"
    body = {"instances": [{"user_id": 3, "amount": 10}]}
    assert httpx.post(url, json=body, timeout=30).status_code == 200
    before = shed_total(narrow_gateway.url)
    ids = [uuid.uuid4().hex for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: httpx.post(url, json=body, timeout=30, headers={"X-Request-Id": i}), ids))
    answered = [r for r in responses if r.status_code == 200]
    shed = [r for r in responses if r.status_code == 503]
    assert answered and shed and len(answered) + len(shed) == len(responses), [r.status_code for r in responses]
    for response in shed:
        assert_problem(response, 503, "overloaded")
        assert response.headers["retry-after"] == "1"
    assert shed_total(narrow_gateway.url) == before + len(shed)
    answered_ids = {r.headers["x-request-id"] for r in answered}
    wait_until(lambda: all(events_of(redis_url, i) for i in answered_ids), timeout_s=10, what="the answers' events")
    shed_ids = {r.headers["x-request-id"] for r in shed}
    assert not any(events_of(redis_url, i) for i in shed_ids), "a shed request is no failure of the version"


def invalid_total(gateway_url: str) -> float:
    pattern = rf'^mlfleet_gateway_predictions_total{{model="{MODEL}",status="invalid",variant="\w+",version="\d+"}} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, httpx.get(f"{gateway_url}/metrics").text, re.MULTILINE))


def test_a_request_refused_for_its_own_input_is_no_failure_of_the_version(fleet, gateway_client, redis_url):
    """Else any caller could fail a healthy canary by sending it bad requests (its routing key picks the variant)."""
    before = invalid_total(fleet.gateway.url)
    bad = [uuid.uuid4().hex for _ in range(3)]
    for request_id in bad[:2]:
        refused = gateway_client.post(PREDICT, json={"instances": [{"user_id": 1, "amount": "lots"}]},
                                      headers={"X-Request-Id": request_id})
        assert_problem(refused, 422, "invalid-input")
    wrong_width = {"inputs": [{"name": "input", "shape": [1, 7], "datatype": "FP32", "data": [1.0] * 7}]}
    refused = httpx.post(f"{fleet.gateway.url}/v2/models/{MODEL}/infer", json=wrong_width, timeout=10,
                         headers={"X-Request-Id": bad[2]})
    assert_problem(refused, 400, "triton-rejected")
    good = uuid.uuid4().hex
    answered = gateway_client.post(PREDICT, json={"instances": [{"user_id": 1, "amount": 5.0}]},
                                   headers={"X-Request-Id": good})
    assert answered.status_code == 200, answered.text
    wait_until(lambda: events_of(redis_url, good), timeout_s=10, what="the good request's event")
    assert not any(events_of(redis_url, i) for i in bad), "no error event for the caller's own mistakes"
    assert invalid_total(fleet.gateway.url) == before + 3
