"""The gateway as a real process in front of the real registry, Triton, Redis and Feast."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import redis

from mlfleet.runtime.processes import wait_until
from services.common.feature_store import open_feature_store
from services.common.redis import PREDICTIONS_STREAM
from services.gateway.router import bucket_of
from tests.gateway.conftest import MODEL



def feast_vector(fleet, redis_url: str, user_id: int, amount: float) -> np.ndarray:
    """The input row built by hand: Feast's own values, in signature order."""
    store = open_feature_store(redis_url=redis_url, feast_dir=fleet.feast_dir)
    values = store.get_online_features(
        features=["user_stats:avg_amount_30d", "user_stats:txn_count_7d"], entity_rows=[{"user_id": user_id}]
    ).to_dict()
    return np.array([[amount, values["avg_amount_30d"][0], values["txn_count_7d"][0]]], dtype=np.float32)


def onnx_probabilities(artifact: bytes, row: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
    outputs = {o.name: v for o, v in zip(session.get_outputs(), session.run(None, {session.get_inputs()[0].name: row}))}
    return outputs["probabilities"]


@pytest.mark.parametrize("version", [1, 2])
def test_pinned_prediction_equals_onnxruntime_on_feast_features(fleet, gateway_client, redis_url, version):
    response = gateway_client.post(f"/v1/models/{MODEL}/predict", headers={"X-Mlfleet-Version": str(version)},
                                   json={"instances": [{"user_id": 7, "amount": 812.5}]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"], body["variant"]) == (MODEL, version, "pinned")
    expected = onnx_probabilities(fleet.artifacts[version], feast_vector(fleet, redis_url, 7, 812.5))[0]
    prediction = body["predictions"][0]
    np.testing.assert_allclose(prediction["probabilities"], expected, rtol=1e-5)
    assert prediction["score"] == pytest.approx(float(expected[1]), rel=1e-5)
    assert prediction["label"] == int(np.argmax(expected))


def test_unpinned_requests_follow_the_routing_key_hash(fleet, gateway_client):
    seen = set()
    for user_id in range(1, 21):
        response = gateway_client.post(f"/v1/models/{MODEL}/predict", json={"instances": [{"user_id": user_id, "amount": 10}]})
        assert response.status_code == 200, response.text
        body = response.json()
        expected = ("canary", 2) if bucket_of(MODEL, str(user_id)) < 50 else ("stable", 1)
        assert (body["variant"], body["version"]) == expected
        seen.add(body["variant"])
    assert seen == {"canary", "stable"}


def test_many_instances_are_answered_in_order(fleet, gateway_client, redis_url):
    instances = [{"user_id": u, "amount": 100.0 * u} for u in (3, 9, 27)]
    response = gateway_client.post(f"/v1/models/{MODEL}/predict", headers={"X-Mlfleet-Version": "1"},
                                   json={"instances": instances})
    assert response.status_code == 200, response.text
    got = [p["probabilities"] for p in response.json()["predictions"]]
    rows = np.vstack([feast_vector(fleet, redis_url, i["user_id"], i["amount"]) for i in instances])
    np.testing.assert_allclose(got, onnx_probabilities(fleet.artifacts[1], rows), rtol=1e-5)


def test_a_request_larger_than_tritons_batch_limit_is_answered_whole_and_in_order(fleet, gateway_client, redis_url):
    """Triton's max_batch_size is 64; a 150-instance request is split into Triton calls and put back together."""
    instances = [{"user_id": 1 + u % 40, "amount": 5.0 * u} for u in range(150)]
    response = gateway_client.post(f"/v1/models/{MODEL}/predict", headers={"X-Mlfleet-Version": "1"},
                                   json={"instances": instances})
    assert response.status_code == 200, response.text
    got = [p["probabilities"] for p in response.json()["predictions"]]
    rows = np.vstack([feast_vector(fleet, redis_url, i["user_id"], i["amount"]) for i in instances])
    np.testing.assert_allclose(got, onnx_probabilities(fleet.artifacts[1], rows), rtol=1e-5)


def test_prediction_events_reach_the_stream(fleet, gateway_client, redis_url):
    request_id = uuid.uuid4().hex
    response = gateway_client.post(f"/v1/models/{MODEL}/predict", headers={"X-Request-Id": request_id},
                                   json={"instances": [{"user_id": 5, "amount": 42.0}]})
    assert response.status_code == 200
    assert response.json()["request_id"] == request_id
    client = redis.Redis.from_url(redis_url)

    def event():
        for _, fields in client.xrevrange(PREDICTIONS_STREAM, count=200):
            data = json.loads(fields[b"event"])
            if data["request_id"] == request_id:
                return data
        return None

    wait_until(lambda: event() is not None, timeout_s=10, what="prediction event")
    logged = event()
    assert logged["status"] == "ok" and logged["model"] == MODEL
    assert logged["feature_names"] == ["amount", "avg_amount_30d", "txn_count_7d"]
    assert logged["features"][0][0] == 42.0
    assert logged["scores"] == [response.json()["predictions"][0]["score"]]
    client.close()


def test_routes_mirror_the_registry_and_metrics_are_exported(fleet, gateway_client):
    served = gateway_client.get("/v1/routes").json()
    registry_table = httpx.get(fleet.registry.url + "/v1/routes", timeout=10).json()
    assert served["revision"] == registry_table["revision"]
    assert served["table"] == registry_table
    metrics = gateway_client.get("/metrics").text
    assert f"mlfleet_gateway_policy_revision {float(registry_table['revision'])}" in metrics
    assert 'mlfleet_gateway_predictions_total{model="gw-fraud"' in metrics
    assert "mlfleet_gateway_events_written_total" in metrics
    assert "/v1/models/{model}/predict" in gateway_client.get("/openapi.json").json()["paths"]


def batch_histogram(metrics: str, model: str) -> tuple[float, float]:
    """(observations, requests) of ``mlfleet_gateway_batch_requests`` for ``model``."""
    values = {}
    for line in metrics.splitlines():
        for part in ("count", "sum"):
            if line.startswith(f'mlfleet_gateway_batch_requests_{part}{{model="{model}"}}'):
                values[part] = float(line.rsplit(" ", 1)[1])
    return values.get("count", 0.0), values.get("sum", 0.0)


async def burst(base_url: str, path: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    """POST every body on its own connection, all written at once (connections opened first), so the requests reach
    the gateway within a moment; each answer's status and JSON."""
    url = httpx.URL(base_url)
    connections = [await asyncio.open_connection(url.host, url.port) for _ in bodies]
    for (_, writer), body in zip(connections, bodies):
        payload = json.dumps(body).encode()
        writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (path.encode(), url.host.encode(), len(payload), payload))
    answers = []
    for reader, writer in connections:
        head, _, body = (await reader.read()).partition(b"\r\n\r\n")
        writer.close()
        answers.append((int(head.split(b" ", 2)[1]), json.loads(body)))
    return answers


def test_concurrent_requests_share_micro_batches_and_each_is_counted_once(fleet, gateway_client):
    """With no shadow and no fallback, each request is one job in exactly one micro-batch (the histogram's sum grows
    by the requests sent); concurrent requests to one version share batches (fewer batches than requests), and each
    still gets its own answer."""
    bodies = [{"instances": [{"user_id": 1 + i % 30, "amount": float(i)}]} for i in range(48)]
    before = batch_histogram(gateway_client.get("/metrics").text, MODEL)
    answers = asyncio.run(burst(str(gateway_client.base_url), f"/v1/models/{MODEL}/predict", bodies))
    assert [status for status, _ in answers] == [200] * len(bodies)
    assert len({answer["request_id"] for _, answer in answers}) == len(bodies)
    batches, requests = (a - b for a, b in zip(batch_histogram(gateway_client.get("/metrics").text, MODEL), before))
    assert requests == len(bodies)
    assert 1 <= batches < len(bodies)
