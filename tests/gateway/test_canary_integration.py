"""Policy changes reach the gateway over pub/sub; shadows are mirrored; a failing canary falls back to stable."""

from __future__ import annotations

import re
import uuid

import pytest

from mlfleet.runtime.processes import wait_until
from services.gateway.router import bucket_of
from tests.gateway.conftest import DEFAULT_POLICY, MODEL, events_of, register, set_traffic, train_onnx
from tests.gateway.factories import signature

FLAKY = "gw-flaky"


def served_policy(gateway_client, model: str) -> dict | None:
    table = gateway_client.get("/v1/routes").json()["table"]
    return next((m for m in table["models"] if m["model"] == model), None)


def stable_user() -> int:
    return next(u for u in range(1, 41) if bucket_of(MODEL, str(u)) >= 50)


def test_policy_change_propagates_and_shadow_is_mirrored(fleet, gateway_client, redis_url):
    """The gateway polls only every 60 s here, so a prompt change proves the pub/sub path."""
    before = gateway_client.get("/v1/routes").json()["revision"]
    set_traffic(fleet.registry.url, MODEL, key=fleet.admin_key, **DEFAULT_POLICY, shadow=2)
    try:
        wait_until(lambda: served_policy(gateway_client, MODEL)["shadow"] == 2, timeout_s=15, what="policy via pub/sub")
        assert gateway_client.get("/v1/routes").json()["revision"] > before
        request_id = uuid.uuid4().hex
        response = gateway_client.post(f"/v1/models/{MODEL}/predict", headers={"X-Request-Id": request_id},
                                       json={"instances": [{"user_id": stable_user(), "amount": 50}]})
        assert response.status_code == 200
        assert response.json()["variant"] == "stable"
        wait_until(lambda: len(events_of(redis_url, request_id)) == 2, timeout_s=10, what="stable and shadow events")
        by_variant = {e["variant"]: e for e in events_of(redis_url, request_id)}
        assert (by_variant["stable"]["version"], by_variant["shadow"]["version"]) == (1, 2)
        assert by_variant["shadow"]["status"] == "ok"
        assert by_variant["shadow"]["features"] == by_variant["stable"]["features"]
    finally:
        set_traffic(fleet.registry.url, MODEL, key=fleet.admin_key, **DEFAULT_POLICY)
        wait_until(lambda: served_policy(gateway_client, MODEL)["shadow"] is None, timeout_s=15, what="policy restored")


@pytest.fixture(scope="module")
def flaky_model(fleet, gateway_client):
    register(fleet.registry.url, FLAKY, {1: train_onnx(1), 2: train_onnx(2)}, key=fleet.admin_key,
             faults={2: {"fail_inference": True}}, stable=1, canary=2, canary_percent=100)
    wait_until(lambda: served_policy(gateway_client, FLAKY) is not None, timeout_s=15, what="flaky model routed")
    return FLAKY


def fallbacks(gateway_client, model: str = FLAKY) -> float:
    match = re.search(rf'mlfleet_gateway_fallbacks_total{{model="{model}"}} (\S+)', gateway_client.get("/metrics").text)
    return float(match.group(1)) if match else 0.0


def test_failing_canary_is_answered_by_stable_and_counted(flaky_model, gateway_client, redis_url):
    before = fallbacks(gateway_client)
    request_id = uuid.uuid4().hex
    response = gateway_client.post(f"/v1/models/{flaky_model}/predict", headers={"X-Request-Id": request_id},
                                   json={"instances": [{"user_id": 3, "amount": 10}]})
    assert response.status_code == 200, response.text
    assert (response.json()["version"], response.json()["variant"]) == (1, "stable")
    assert fallbacks(gateway_client) == before + 1
    wait_until(lambda: len(events_of(redis_url, request_id)) == 2, timeout_s=10, what="canary error and stable events")
    by_variant = {e["variant"]: e for e in events_of(redis_url, request_id)}
    assert (by_variant["canary"]["version"], by_variant["canary"]["status"]) == (2, "error")
    assert by_variant["canary"]["error_code"] == "inference-failed"
    assert by_variant["stable"]["status"] == "ok"


BROKEN = "gw-broken"


def test_when_stable_fails_too_each_failure_is_recorded_against_its_own_version(fleet, gateway_client, redis_url):
    register(fleet.registry.url, BROKEN, {1: train_onnx(1), 2: train_onnx(2)}, key=fleet.admin_key,
             faults={1: {"fail_inference": True}, 2: {"fail_inference": True}}, stable=1, canary=2, canary_percent=100)
    wait_until(lambda: served_policy(gateway_client, BROKEN) is not None, timeout_s=15, what="broken model routed")
    request_id = uuid.uuid4().hex
    response = gateway_client.post(f"/v1/models/{BROKEN}/predict", headers={"X-Request-Id": request_id},
                                   json={"instances": [{"user_id": 3, "amount": 10}]})
    assert response.status_code == 502 and response.json()["code"] == "inference-failed", response.text
    wait_until(lambda: len(events_of(redis_url, request_id)) == 2, timeout_s=10, what="both failures' events")
    failures = sorted((e["variant"], e["version"], e["status"]) for e in events_of(redis_url, request_id))
    assert failures == [("canary", 2, "error"), ("stable", 1, "error")]


def test_pinned_failing_version_is_a_problem_not_a_500(flaky_model, gateway_client):
    response = gateway_client.post(f"/v1/models/{flaky_model}/predict", headers={"X-Mlfleet-Version": "2"},
                                   json={"instances": [{"user_id": 3, "amount": 10}]})
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "inference-failed"


PARTIAL = "gw-partial"
UNKNOWN_USER = 9_999
"""No feature of this user is in the online store."""


@pytest.fixture(scope="module")
def canary_needing_features(fleet, gateway_client):
    """Stable v1 fills missing features with defaults; canary v2, at 100 %, needs them."""
    register(fleet.registry.url, PARTIAL, {1: train_onnx(1), 2: train_onnx(2)}, key=fleet.admin_key,
             signatures={1: signature(avg_default=100.0, txn_default=0.0)}, stable=1, canary=2, canary_percent=100)
    wait_until(lambda: served_policy(gateway_client, PARTIAL) is not None, timeout_s=15, what="partial model routed")
    return PARTIAL


def predictions_counted(gateway_client, model: str) -> dict[tuple[str, str], float]:
    """``mlfleet_gateway_predictions_total`` of ``model`` by (variant, status)."""
    found = re.findall(rf'mlfleet_gateway_predictions_total{{model="{model}",status="(\w+)",variant="(\w+)",'
                       r'version="\d+"} (\S+)', gateway_client.get("/metrics").text)
    return {(variant, status): float(value) for status, variant, value in found}


def test_a_canary_missing_features_that_stable_does_without_is_answered_by_stable_and_judged(
        canary_needing_features, gateway_client, redis_url):
    before, fallen_back = predictions_counted(gateway_client, PARTIAL), fallbacks(gateway_client, PARTIAL)
    request_id = uuid.uuid4().hex
    response = gateway_client.post(f"/v1/models/{PARTIAL}/predict", headers={"X-Request-Id": request_id},
                                   json={"instances": [{"user_id": UNKNOWN_USER, "amount": 10}]})

    assert response.status_code == 200, response.text
    assert (response.json()["version"], response.json()["variant"]) == (1, "stable")
    assert fallbacks(gateway_client, PARTIAL) == fallen_back + 1
    wait_until(lambda: len(events_of(redis_url, request_id)) == 2, timeout_s=10, what="canary error and stable events")
    by_variant = {e["variant"]: e for e in events_of(redis_url, request_id)}
    assert (by_variant["canary"]["version"], by_variant["canary"]["status"]) == (2, "error")
    assert by_variant["canary"]["error_code"] == "missing-features"
    assert by_variant["stable"]["status"] == "ok"
    after = predictions_counted(gateway_client, PARTIAL)
    assert after[("canary", "error")] == before.get(("canary", "error"), 0) + 1
    assert after.get(("canary", "missing_features"), 0) == before.get(("canary", "missing_features"), 0)


def test_features_missing_on_stable_too_are_the_callers_and_counted_as_such(fleet, gateway_client, redis_url):
    model = "gw-unknown-entity"
    register(fleet.registry.url, model, {1: train_onnx(1), 2: train_onnx(2)}, key=fleet.admin_key, stable=1, canary=2,
             canary_percent=100)
    wait_until(lambda: served_policy(gateway_client, model) is not None, timeout_s=15, what="model routed")
    before = predictions_counted(gateway_client, model)
    request_id = uuid.uuid4().hex
    response = gateway_client.post(f"/v1/models/{model}/predict", headers={"X-Request-Id": request_id},
                                   json={"instances": [{"user_id": UNKNOWN_USER, "amount": 10}]})

    assert response.status_code == 422, response.text
    assert response.json()["code"] == "missing-features"
    after = predictions_counted(gateway_client, model)
    for variant in ("canary", "stable"):
        assert after[(variant, "missing_features")] == before.get((variant, "missing_features"), 0) + 1
        assert after.get((variant, "error"), 0) == before.get((variant, "error"), 0)
    assert events_of(redis_url, request_id) == [], "a caller's miss is no version's failure"


def test_a_canary_missing_features_while_stable_fails_answers_the_callers_422(fleet, gateway_client, redis_url):
    """Stable's failure says nothing about the entities: the caller gets the canary's 422, not a 5xx inviting
    retries of a request that cannot succeed; stable's failure is still recorded against stable."""
    model = "gw-partial-broken"
    register(fleet.registry.url, model, {1: train_onnx(1), 2: train_onnx(2)}, key=fleet.admin_key,
             signatures={1: signature(avg_default=100.0, txn_default=0.0)}, faults={1: {"fail_inference": True}},
             stable=1, canary=2, canary_percent=100)
    wait_until(lambda: served_policy(gateway_client, model) is not None, timeout_s=15, what="model routed")
    request_id = uuid.uuid4().hex
    response = gateway_client.post(f"/v1/models/{model}/predict", headers={"X-Request-Id": request_id},
                                   json={"instances": [{"user_id": UNKNOWN_USER, "amount": 10}]})

    assert response.status_code == 422 and response.json()["code"] == "missing-features", response.text
    wait_until(lambda: events_of(redis_url, request_id), timeout_s=10, what="stable's failure")
    assert [(e["variant"], e["status"]) for e in events_of(redis_url, request_id)] == [("stable", "error")]
    assert predictions_counted(gateway_client, model)[("canary", "missing_features")] == 1
