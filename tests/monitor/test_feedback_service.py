"""Feedback against a real monitor: joins, outcomes, and live quality equal to scikit-learn's."""

from __future__ import annotations

import time
import uuid

import httpx
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from mlfleet.runtime.processes import wait_until
from services.common.redis import PREDICTIONS_STREAM
from services.common.request_ids import new_request_id
from services.common.schemas import Variant
from tests.monitor.factories import make_event, publish
from tests.registry.harness import bearer, dead_address

PROBLEM_JSON = "application/problem+json"


def counted(client, n: int) -> None:
    wait_until(lambda: client.get("/v1/stats").json()["events_processed"] >= n, timeout_s=30, what=f"{n} events")


def test_feedback_joins_predictions_and_quality_equals_scikit_learn(demo_registry, run_monitor, stream_client):
    monitor = run_monitor(**demo_registry.monitor_settings(), alert_rules='{"min_labelled": 20, "min_accuracy": 0.85}',
                          alert_interval_s=0.2)
    rng = np.random.default_rng(3)
    scores = rng.uniform(0, 1, 200)
    events = [make_event("fraud", 2, scores=[float(s)]) for s in scores]
    shadow = [e.model_copy(update={"version": 3, "variant": Variant.shadow, "scores": [1 - e.scores[0]],
                                   "labels": [int(e.scores[0] < 0.5)]}) for e in events[:50]]
    pair = make_event("fraud", 2, scores=[0.9, 0.2])
    publish(stream_client, PREDICTIONS_STREAM, events + shadow + [pair])

    with httpx.Client(base_url=monitor.url, timeout=10, headers=demo_registry.deployer()) as client:
        counted(client, len(events) + len(shadow) + 1)
        truth = (rng.uniform(0, 1, 200) < np.clip(scores * 1.2 - 0.1, 0, 1)).astype(int)
        items = [{"request_id": e.request_id, "label": int(t)} for e, t in zip(events, truth)]
        first = client.post("/v1/feedback", json={"items": items[:150]})
        assert first.status_code == 200, first.text
        assert first.json()["counts"] == {"accepted": 150}
        assert first.json()["results"][0]["versions"] == [2, 3]

        unknown = uuid.uuid4().hex
        second = client.post("/v1/feedback", json=items[140:] + [{"request_id": unknown, "label": 1},
                                                                  {"request_id": pair.request_id, "label": 1, "instance": 5},
                                                                  {"request_id": pair.request_id, "label": 0, "instance": 1},
                                                                  {"request_id": pair.request_id, "label": 0, "instance": 1}])
        assert second.json()["counts"] == {"accepted": 51, "duplicate": 11, "unknown": 1, "invalid": 1}
        outcomes = {(r["request_id"], r["instance"]): r["outcome"] for r in second.json()["results"]}
        assert outcomes[(unknown, 0)] == "unknown" and outcomes[(pair.request_id, 5)] == "invalid"
        single = client.post("/v1/feedback", json=items[0])
        assert single.json() == {"counts": {"duplicate": 1},
                                 "results": [{"request_id": items[0]["request_id"], "instance": 0,
                                              "outcome": "duplicate", "versions": []}]}

        metrics = client.get("/v1/models/fraud/metrics", params={"window_s": 600}).json()
        by_version = {v["version"]: v for v in metrics["versions"]}
        predicted = (scores >= 0.5).astype(int)
        expected = {
            "labelled": 200, "accuracy": accuracy_score(truth, predicted),
            "precision": precision_score(truth, predicted), "recall": recall_score(truth, predicted),
            "f1": f1_score(truth, predicted), "roc_auc": roc_auc_score(truth, scores),
        }
        quality = by_version[2]["quality"]
        assert quality.pop("labelled") == 201
        expected.pop("labelled")
        pair_truth, pair_pred, pair_score = np.append(truth, 0), np.append(predicted, 0), np.append(scores, 0.2)
        assert quality == pytest.approx({
            "accuracy": accuracy_score(pair_truth, pair_pred), "precision": precision_score(pair_truth, pair_pred),
            "recall": recall_score(pair_truth, pair_pred), "f1": f1_score(pair_truth, pair_pred),
            "roc_auc": roc_auc_score(pair_truth, pair_score),
        })
        shadow_truth, shadow_scores = truth[:50], 1 - scores[:50]
        assert by_version[3]["quality"] == pytest.approx({
            "labelled": 50, "accuracy": accuracy_score(shadow_truth, (shadow_scores >= 0.5).astype(int)),
            "precision": precision_score(shadow_truth, (shadow_scores >= 0.5).astype(int), zero_division=0),
            "recall": recall_score(shadow_truth, (shadow_scores >= 0.5).astype(int), zero_division=0),
            "f1": f1_score(shadow_truth, (shadow_scores >= 0.5).astype(int), zero_division=0),
            "roc_auc": roc_auc_score(shadow_truth, shadow_scores),
        })
        before = client.get("/v1/models/fraud/metrics", params={"start": 1, "end": 1000}).json()
        assert {v["version"]: v["quality"] for v in before["versions"]} == {2: None, 3: None}

        def shadow_alert() -> dict | None:
            alerts = client.get("/v1/alerts", params={"rule": "accuracy"}).json()["data"]
            return next((a for a in alerts if a["version"] == 3), None)
        wait_until(shadow_alert, timeout_s=30, what="accuracy alert on the shadow")
        alert = shadow_alert()
        assert (alert["version"], alert["severity"], alert["action"]) == (3, "critical", "retrain")
        assert alert["values"]["accuracy"] == pytest.approx(by_version[3]["quality"]["accuracy"])

        text = client.get("/metrics").text
        assert 'mlfleet_monitor_feedback_total{outcome="duplicate"} 12.0' in text
        assert 'mlfleet_monitor_feedback_total{outcome="accepted"} 201.0' in text


def test_quality_reads_predictions_against_the_models_positive_class(demo_registry, run_monitor, stream_client):
    """A model whose positive class is 0 (its events name it): a prediction labelled 0 is a positive one. Read as
    "0 is negative", every prediction below would have counted wrong and accuracy would be 0, not 1."""
    monitor = run_monitor(**demo_registry.monitor_settings())
    scores = [0.9, 0.8, 0.3, 0.1, 0.7, 0.2]
    events = [make_event("fraud", 4, scores=[s]).model_copy(update={"labels": [0 if s >= 0.5 else 1],
                                                                     "positive_label": 0}) for s in scores]
    publish(stream_client, PREDICTIONS_STREAM, events)
    with httpx.Client(base_url=monitor.url, timeout=10, headers=demo_registry.deployer()) as client:
        counted(client, len(events))
        truth = [int(s >= 0.5) for s in scores]
        response = client.post("/v1/feedback", json=[{"request_id": e.request_id, "label": t}
                                                     for e, t in zip(events, truth)])
        assert response.json()["counts"] == {"accepted": len(events)}
        quality = next(v["quality"] for v in client.get("/v1/models/fraud/metrics").json()["versions"]
                       if v["version"] == 4)
        assert (quality["labelled"], quality["accuracy"], quality["precision"], quality["recall"]) == (6, 1.0, 1.0, 1.0)


def test_feedback_after_the_prediction_expired_is_late(demo_registry, run_monitor, stream_client):
    """Late, whether the request id carries its time (a UUIDv7, as the gateway makes them: no marker kept) or not (a
    caller's own id: a seen marker kept for it)."""
    monitor = run_monitor(**demo_registry.monitor_settings(), prediction_ttl_s=1)
    untimed = [make_event("fraud", 1) for _ in range(4)]
    # a caller's UUIDv7 made days before its prediction (a retry) does not date it: it gets a marker too
    untimed.append(make_event("fraud", 1).model_copy(update={"request_id": new_request_id(time.time() - 3 * 86400)}))
    timed = [make_event("fraud", 1).model_copy(update={"request_id": new_request_id()}) for _ in range(5)]
    publish(stream_client, PREDICTIONS_STREAM, untimed + timed)
    with httpx.Client(base_url=monitor.url, timeout=10, headers=demo_registry.deployer()) as client:
        counted(client, 10)
        markers = {key.decode().rsplit(":", 1)[1] for key in stream_client.scan_iter(match="mlfleet:monitor:seen:*")}
        assert markers == {e.request_id for e in untimed}
        time.sleep(1.5)
        just_made, never_made = new_request_id(), uuid.uuid4().hex
        response = client.post("/v1/feedback", json=[{"request_id": e.request_id, "label": 1} for e in untimed + timed]
                               + [{"request_id": just_made, "label": 1}, {"request_id": never_made, "label": 1}])
        assert response.json()["counts"] == {"late": 10, "pending": 1, "unknown": 1}
        metrics = client.get("/v1/models/fraud/metrics").json()
        assert metrics["versions"][0]["quality"] is None


def test_a_label_sent_again_while_its_prediction_is_kept_is_a_duplicate(demo_registry, run_monitor, stream_client):
    """Even when ids are remembered for less time than predictions are kept (``seen_ttl_s`` < ``prediction_ttl_s``)."""
    monitor = run_monitor(**demo_registry.monitor_settings(), prediction_ttl_s=30, seen_ttl_s=1)
    event = make_event("fraud", 1)
    publish(stream_client, PREDICTIONS_STREAM, [event])
    with httpx.Client(base_url=monitor.url, timeout=10, headers=demo_registry.deployer()) as client:
        counted(client, 1)
        label = [{"request_id": event.request_id, "label": 1}]
        assert client.post("/v1/feedback", json=label).json()["counts"] == {"accepted": 1}
        time.sleep(1.5)
        assert client.post("/v1/feedback", json=label).json()["counts"] == {"duplicate": 1}


def test_one_request_id_sent_to_two_models_is_labelled_per_model(demo_registry, run_monitor, stream_client):
    """A caller forwarding one id to two models whose versions share a number: both predictions are kept, a label
    naming its model joins that model's only (once per model), and one without a model joins both."""
    monitor = run_monitor(**demo_registry.monitor_settings())
    fraud = make_event("fraud", 2, scores=[0.9]).model_copy(update={"labels": [1]})
    churn = make_event("churn", 2, scores=[0.2]).model_copy(update={"request_id": fraud.request_id, "labels": [0]})
    other = make_event("fraud", 2, scores=[0.8]).model_copy(update={"labels": [1]})
    racing = make_event("fraud", 2, scores=[0.7]).model_copy(update={"request_id": new_request_id()})
    publish(stream_client, PREDICTIONS_STREAM, [fraud, churn, other, racing])
    with httpx.Client(base_url=monitor.url, timeout=10, headers=demo_registry.deployer()) as client:
        counted(client, 4)
        shared = fraud.request_id
        answer = client.post("/v1/feedback", json=[{"request_id": shared, "label": 1, "model": "fraud"},
                                                   {"request_id": shared, "label": 1, "model": "churn"},
                                                   {"request_id": shared, "label": 1, "model": "fraud"},
                                                   {"request_id": shared, "label": 1},
                                                   {"request_id": shared, "label": 1, "model": "ranker"},
                                                   {"request_id": racing.request_id, "label": 1, "model": "churn"},
                                                   {"request_id": other.request_id, "label": 1}]).json()
        assert [r["outcome"] for r in answer["results"]] == [
            "accepted", "accepted", "duplicate",
            "duplicate",  # without a model: both models already have it
            "unknown",  # the id's seen marker is the other models', not this one's
            "pending",  # churn's event for a fresh id may still be on its way, though fraud's arrived
            "accepted"]

        def labelled(model: str) -> dict:
            versions = client.get(f"/v1/models/{model}/metrics").json()["versions"]
            return next(v["quality"] for v in versions if v["version"] == 2)

        assert (labelled("fraud")["labelled"], labelled("fraud")["accuracy"]) == (2, 1.0)
        assert (labelled("churn")["labelled"], labelled("churn")["accuracy"]) == (1, 0.0), "its own prediction, 0"


BAD_FEEDBACK = [
    ({"request_id": "r", "label": 2}, 422, "invalid-input"),
    ({"request_id": "", "label": 1}, 422, "invalid-input"),
    ({"request_id": "r"}, 422, "invalid-input"),
    ({"request_id": "r", "label": 1, "model": "Not A Model"}, 422, "invalid-input"),
    ({"items": []}, 422, "invalid-input"),
    ([{"request_id": f"r{i}", "label": 1} for i in range(11)], 413, "payload-too-large"),
    ("not json", 400, "bad-request"),
]


def test_bad_feedback_and_alert_queries_are_problems(demo_registry, run_monitor):
    monitor = run_monitor(**demo_registry.monitor_settings(), feedback_max_batch=10, query_window_max_s=600)
    with httpx.Client(base_url=monitor.url, timeout=10, headers=demo_registry.deployer()) as client:
        for body, status, code in BAD_FEEDBACK:
            if isinstance(body, str):
                response = client.post("/v1/feedback", content=body, headers={"Content-Type": "application/json"})
            else:
                response = client.post("/v1/feedback", json=body)
            assert (response.status_code, response.headers["content-type"]) == (status, PROBLEM_JSON), body
            assert response.json()["code"] == code
        assert client.get("/v1/alerts").json() == {"data": [], "count": 0}
        for params in ({"rule": "nonsense"}, {"limit": 0}, {"model": "Bad Name"}):
            response = client.get("/v1/alerts", params=params)
            assert (response.status_code, response.headers["content-type"]) == (422, PROBLEM_JSON), params
        for path in ("metrics", "series"):
            too_long = client.get(f"/v1/models/fraud/{path}", params={"window_s": 601})
            assert too_long.status_code == 422 and "query_window_max_s" in too_long.json()["detail"], too_long.text


def test_feedback_needs_a_deployer_key_and_reads_stay_open(demo_registry, run_monitor, stream_client):
    """Labelling is a deployer's action, checked against the registry; metrics, alerts and the dashboard are not."""
    monitor = run_monitor(**demo_registry.monitor_settings())
    event = make_event("fraud", 1)
    publish(stream_client, PREDICTIONS_STREAM, [event])
    viewer = demo_registry.viewer_key_file.read_text().strip()
    label = {"request_id": event.request_id, "label": 1}
    with httpx.Client(base_url=monitor.url, timeout=10) as client:
        counted(client, 1)
        for headers, status, code in (({}, 401, "unauthorized"), (bearer("mlf_not-a-key"), 401, "unauthorized"),
                                      ({"Authorization": "Basic abc"}, 401, "unauthorized"),
                                      (bearer(viewer), 403, "forbidden")):
            response = client.post("/v1/feedback", json=label, headers=headers)
            assert (response.status_code, response.headers["content-type"]) == (status, PROBLEM_JSON), headers
            assert response.json()["code"] == code
        assert response.json()["required_role"] == "deployer"
        assert client.post("/v1/feedback", json=label, headers=demo_registry.deployer()).json()["counts"] == {"accepted": 1}
        for path in ("/v1/models", "/v1/models/fraud/metrics", "/v1/alerts", "/v1/stats", "/dashboard"):
            assert client.get(path).status_code == 200, path


def test_feedback_is_refused_while_the_registry_cannot_check_keys(run_monitor):
    monitor = run_monitor(registry_url=f"http://{dead_address()}", registry_timeout_s=1)
    response = httpx.post(f"{monitor.url}/v1/feedback", json={"request_id": "r", "label": 1},
                          headers=bearer("mlf_some-key"), timeout=10)
    assert (response.status_code, response.headers["content-type"]) == (503, PROBLEM_JSON)
    assert response.json()["code"] == "backend-unavailable"
