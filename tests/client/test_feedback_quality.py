"""Ground truth sent with the client becomes the monitor's live quality, as ``mlfleet metrics`` shows it."""

from __future__ import annotations


import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from mlfleet.client.models import FeedbackItem
from mlfleet.demo.data import label_column, request_columns
from tests.client.conftest import MODEL, as_json

REQUESTS = 6
INSTANCES_PER_REQUEST = 10


def labelled_requests(frame) -> list[tuple[list[dict], list[int]]]:
    """Requests of several instances each, with their true labels: every fraud of the frame and legitimate ones."""
    frauds = frame[frame[label_column] == 1].head(20)
    legitimate = frame[frame[label_column] == 0].head(REQUESTS * INSTANCES_PER_REQUEST - len(frauds))
    rows = pd.concat([frauds, legitimate]).sample(frac=1.0, random_state=3)
    requests = []
    for start in range(0, len(rows), INSTANCES_PER_REQUEST):
        chunk = rows.iloc[start:start + INSTANCES_PER_REQUEST]
        instances = [{"user_id": int(r.user_id), "merchant_id": int(r.merchant_id),
                      **{c: float(getattr(r, c)) for c in request_columns}} for r in chunk.itertuples(index=False)]
        requests.append((instances, chunk[label_column].astype(int).tolist()))
    return requests


def test_feedback_becomes_the_accuracy_mlfleet_metrics_reports(cli, fleet_client, registered, fraud_frame):
    stable = fleet_client.get_traffic(MODEL).stable
    truth, predicted, scores, items = [], [], [], []
    for instances, labels in labelled_requests(fraud_frame):
        answer = fleet_client.predict(MODEL, instances, version=stable)
        truth += labels
        predicted += [int(p.label) for p in answer.predictions]
        scores += [p.score for p in answer.predictions]
        items += [FeedbackItem(request_id=answer.request_id, label=label, instance=i) for i, label in enumerate(labels)]
    assert 0 < sum(truth) < len(truth)

    # sent right after the predictions, as a caller would: labels whose prediction is still on its way to the
    # monitor come back `pending`, and the client sends them again until accepted
    report = fleet_client.feedback_batch(items)
    assert report.counts == {"accepted": len(items)}, report.counts

    metrics = as_json(cli("metrics", MODEL, "--output", "json"))
    quality = next(v for v in metrics["versions"] if v["version"] == stable)["quality"]
    assert quality["labelled"] == len(truth)
    assert quality["accuracy"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-12)
    assert quality["precision"] == pytest.approx(precision_score(truth, predicted, zero_division=0), abs=1e-12)
    assert quality["recall"] == pytest.approx(recall_score(truth, predicted, zero_division=0), abs=1e-12)
    assert quality["f1"] == pytest.approx(f1_score(truth, predicted, zero_division=0), abs=1e-12)
    assert quality["roc_auc"] == pytest.approx(roc_auc_score(truth, scores), abs=1e-9)
    assert "ACCURACY" in cli("metrics", MODEL).stdout
