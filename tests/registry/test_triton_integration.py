"""Traffic changes reach the real Triton and the real Redis."""

from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton_http

from services.common.redis import POLICY_CHANNEL, connect
from services.common.schemas import PolicyChanged
from tests.registry.factories import model_name
from tests.registry.harness import running_registry
from tests.registry.test_api import create_model, register


def infer(triton, model: str, version: int, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    client = triton_http.InferenceServerClient(triton.http_url)
    try:
        tensor = triton_http.InferInput("input", list(features.shape), "FP32")
        tensor.set_data_from_numpy(features)
        result = client.infer(model, [tensor], model_version=str(version))
        return result.as_numpy("label").ravel(), result.as_numpy("probabilities")
    finally:
        client.close()


async def next_policy_message(pubsub, timeout_s: float = 10.0) -> PolicyChanged:
    async with asyncio.timeout(timeout_s):
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                return PolicyChanged.model_validate_json(message["data"])


@pytest.fixture
async def policy_messages(redis_url):
    redis = connect(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(POLICY_CHANNEL)
    yield pubsub
    await pubsub.aclose()
    await redis.aclose()


@pytest.fixture
async def sqlite_client(sqlite_settings):
    async with running_registry(sqlite_settings) as client:
        yield client


async def test_traffic_loads_versions_that_answer_like_the_trained_model(sqlite_client, triton, trained, trained_v2,
                                                                          policy_messages):
    name = model_name()
    await create_model(sqlite_client, name)
    await register(sqlite_client, name, trained.onnx)

    first = await sqlite_client.put(f"/v1/models/{name}/traffic", json={"stable": 1})
    assert first.status_code == 200, first.text
    assert await next_policy_message(policy_messages) == PolicyChanged(model=name, revision=first.json()["revision"])

    rows = trained.features[:8]
    labels, probabilities = infer(triton, name, 1, rows)
    session = ort.InferenceSession(trained.onnx, providers=["CPUExecutionProvider"])
    onnx_labels, onnx_probabilities = session.run(["label", "probabilities"], {session.get_inputs()[0].name: rows})
    np.testing.assert_array_equal(labels, onnx_labels)
    np.testing.assert_allclose(probabilities, onnx_probabilities, rtol=1e-6)
    np.testing.assert_allclose(probabilities, trained.estimator.predict_proba(rows), atol=1e-5)
    np.testing.assert_array_equal(labels, trained.estimator.predict(rows))

    await register(sqlite_client, name, trained_v2.onnx)
    second = await sqlite_client.put(f"/v1/models/{name}/traffic", json={"stable": 1, "canary": 2, "canary_percent": 10})
    assert second.status_code == 200, second.text
    assert await next_policy_message(policy_messages) == PolicyChanged(model=name, revision=second.json()["revision"])

    client = triton_http.InferenceServerClient(triton.http_url)
    try:
        assert client.is_model_ready(name, "1") and client.is_model_ready(name, "2")
    finally:
        client.close()
    _, canary_probabilities = infer(triton, name, 2, rows)
    np.testing.assert_allclose(canary_probabilities, trained_v2.estimator.predict_proba(rows), atol=1e-5)


async def test_a_restarted_registry_reloads_what_triton_lost(sqlite_settings, triton, trained):
    settings = sqlite_settings
    name = model_name()
    async with running_registry(settings) as client:
        await create_model(client, name)
        await register(client, name, trained.onnx)
        assert (await client.put(f"/v1/models/{name}/traffic", json={"stable": 1})).status_code == 200

    triton_client = triton_http.InferenceServerClient(triton.http_url)
    try:
        triton_client.unload_model(name)
        assert not triton_client.is_model_ready(name, "1")
        async with running_registry(settings):
            async with asyncio.timeout(60):
                while not triton_client.is_model_ready(name, "1"):
                    await asyncio.sleep(0.2)
        labels, _ = infer(triton, name, 1, trained.features[:4])
        np.testing.assert_array_equal(labels, trained.estimator.predict(trained.features[:4]))
    finally:
        triton_client.close()
