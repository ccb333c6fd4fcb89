"""The predict route's front door: which requests it takes, and that it keeps the route's HTTP contract."""

from __future__ import annotations

import re
import time
import uuid

import numpy as np
import orjson
import pytest

from services.common.request_ids import made_at
from services.common.schemas import SignatureOutput, Variant
from services.gateway.hot_path import predict_path_model
from services.gateway.postprocess import to_predictions
from services.gateway.predictions import PredictAnswer
from services.gateway.schemas import PredictResponse
from tests.gateway.conftest import MODEL


@pytest.mark.parametrize(("path", "model"), [
    ("/v1/models/fraud/predict", "fraud"),
    ("/v1/models/a.b-c_d/predict", "a.b-c_d"),
    ("/v1/models//predict", None),
    ("/v1/models/fraud/versions/2/predict", None),
    ("/v1/models/fraud/predict/", None),
    ("/v1/models/fraud", None),
    ("/v2/models/fraud/infer", None),
])
def test_only_the_predict_path_of_one_model_is_taken(path, model):
    assert predict_path_model(path) == model


@pytest.mark.parametrize("classes", [[0, 1], ["legit", "fraud"]])
def test_the_answer_orjson_writes_is_a_predict_response_with_every_field(classes):
    predictions = to_predictions(SignatureOutput(classes=classes), np.array([[0.25, 0.75], [0.9, 0.1]], dtype=np.float32))
    written = PredictAnswer("fraud", 3, Variant.canary, predictions, "req-1", "a" * 32).json()
    response = PredictResponse.model_validate_json(written)
    assert set(orjson.loads(written)) == set(PredictResponse.model_fields)  # a field added to the schema must be here
    assert written == response.model_dump_json().encode(), "the same bytes pydantic writes: order, enums, floats"
    assert (response.model, response.version, response.variant, response.request_id, response.trace_id) == \
        ("fraud", 3, Variant.canary, "req-1", "a" * 32)
    assert [p.label for p in response.predictions] == [classes[1], classes[0]]
    assert [p.score for p in response.predictions] == pytest.approx([0.75, 0.1])
    assert [p.probabilities for p in response.predictions] == [pytest.approx([0.25, 0.75]), pytest.approx([0.9, 0.1])]


def predict_responses(metrics_text: str, status: str) -> float:
    found = re.search(rf'^mlfleet_gateway_predict_responses_total{{status="{status}"}} (\S+)$', metrics_text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_front_door_answers_keep_the_routes_contract_and_are_counted(gateway_client):
    before = gateway_client.get("/metrics").text
    ok = gateway_client.post(f"/v1/models/{MODEL}/predict", json={"instances": [{"user_id": 7, "amount": 10.0}]},
                             headers={"X-Request-Id": "front-door-1"})
    refused = gateway_client.post(f"/v1/models/{MODEL}/predict", content=b"{", headers={"Content-Type": "application/json"})
    assert gateway_client.get("/v1/routes").status_code == 200
    after = gateway_client.get("/metrics").text

    assert ok.status_code == 200, ok.text
    assert ok.headers["content-type"] == "application/json"
    assert ok.headers["x-request-id"] == "front-door-1" and ok.json()["request_id"] == "front-door-1"
    assert re.fullmatch(r"[0-9a-f]{32}", ok.headers["x-trace-id"])
    assert refused.status_code == 400 and refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["instance"] == f"/v1/models/{MODEL}/predict" and "Traceback" not in refused.text
    for response in (ok, refused):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
    assert predict_responses(after, "200") == predict_responses(before, "200") + 1
    assert predict_responses(after, "400") == predict_responses(before, "400") + 1
    assert 'handler="/v1/models/{model}/predict"' not in after, "served ahead of the HTTP middleware"
    assert 'handler="/v1/routes"' in after, "other routes still go through it"


def test_a_request_without_an_id_gets_a_uuid7_of_its_time(gateway_client):
    before = time.time()
    response = gateway_client.post(f"/v1/models/{MODEL}/predict", json={"instances": [{"user_id": 7, "amount": 10.0}]})
    after = time.time()
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    assert response.json()["request_id"] == request_id
    minted = uuid.UUID(request_id)
    assert (minted.version, minted.variant, minted.hex) == (7, uuid.RFC_4122, request_id)
    assert int(before * 1000) / 1000 <= made_at(request_id) <= after


def test_a_request_id_longer_than_feedback_accepts_is_refused(gateway_client):
    """Feedback names a prediction by its id, up to 128 characters: a longer one would make a prediction that could
    never be labelled."""
    body = {"instances": [{"user_id": 7, "amount": 10.0}]}
    longest = gateway_client.post(f"/v1/models/{MODEL}/predict", json=body, headers={"X-Request-Id": "r" * 128})
    too_long = gateway_client.post(f"/v1/models/{MODEL}/predict", json=body, headers={"X-Request-Id": "r" * 129})
    assert longest.status_code == 200, longest.text
    assert too_long.status_code == 400 and too_long.headers["content-type"] == "application/problem+json"
    assert "at most 128" in too_long.json()["detail"]
