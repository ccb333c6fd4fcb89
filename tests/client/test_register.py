"""The data scientist's one call: a scikit-learn model and its DataFrame become a served version."""

from __future__ import annotations

import pytest
from sklearn.linear_model import LogisticRegression

from mlfleet.client import AsyncFleet, ModelNotFound, VersionRejected
from mlfleet.demo.data import feature_columns, request_columns
from tests.client.conftest import MODEL


def test_register_infers_signature_profile_metrics_and_lineage(registered, training_data):
    inputs = {i.name: i for i in registered.signature.inputs}
    assert list(inputs) == list(training_data.x_train.columns)
    for reference in feature_columns:
        view, field = reference.split(":")
        assert inputs[field].source == "feast" and inputs[field].feature == reference
    for column in request_columns:
        assert inputs[column].source == "request" and inputs[column].feature is None
    assert registered.signature.entities == ["user_id", "merchant_id"]
    assert registered.metrics["auc"] >= 0.9 and registered.metrics["accuracy"] >= 0.85
    assert set(registered.metrics) == {"auc", "accuracy", "precision", "recall", "f1"}
    assert set(registered.reference_profile["features"]) == set(inputs)
    assert registered.reference_profile["scores"]["count"] == len(training_data.x_train)
    assert registered.lineage.params["estimator"] == "Pipeline"
    assert registered.lineage.params["metrics_data"] == "holdout"
    assert len(registered.lineage.dataset_hash) == 64
    assert registered.lineage.code_revision and len(registered.lineage.code_revision.split("+")[0]) == 40


def test_registered_version_serves_predictions_with_online_features(fleet_client, registered, instances):
    answer = fleet_client.predict(MODEL, instances[:3], routing_key="u1")
    assert answer.version == registered.version
    assert len(answer.predictions) == 3
    assert all(0.0 <= p.score <= 1.0 for p in answer.predictions)


def test_identical_artifact_is_reused_on_request(fleet_client, registered, fraud_estimator, training_data):
    before = fleet_client.list_versions(MODEL).count
    again = fleet_client.register(MODEL, fraud_estimator, training_data.x_train, labels=training_data.y_train,
                                  holdout=(training_data.x_test, training_data.y_test), reuse_existing=True)
    assert again.sha256 == registered.sha256
    assert fleet_client.list_versions(MODEL).count == before


def test_refused_version_raises_with_the_gates_reasons(fleet_client, registered, training_data):
    shuffled = training_data.y_train.sample(frac=1.0, random_state=1).to_numpy()
    weak = LogisticRegression(max_iter=1000).fit(training_data.x_train, shuffled)
    with pytest.raises(VersionRejected) as refused:
        fleet_client.register(MODEL, weak, training_data.x_train, labels=training_data.y_train,
                              holdout=(training_data.x_test, training_data.y_test))
    error = refused.value
    assert error.status == 422 and error.code == "version-rejected"
    assert any(reason.startswith("auc 0.") and "< min_auc 0.9" in reason for reason in error.reasons), error.reasons
    audit = fleet_client.audit(model=MODEL, limit=5).data
    assert audit[0].action == "version.reject" and audit[0].detail["reasons"] == error.reasons


def test_explicit_signature_and_metrics_win(fleet_client, registered, fraud_estimator, training_data):
    signature = registered.signature.model_copy(deep=True)
    signature.inputs[0].default = 0.0
    version = fleet_client.register(MODEL, fraud_estimator, training_data.x_train, signature=signature,
                                    metrics={"auc": 0.97, "accuracy": 0.9}, lineage={"params": {"team": "fraud"}},
                                    description="explicit")
    assert version.signature.inputs[0].default == 0.0
    assert version.metrics == {"auc": 0.97, "accuracy": 0.9}
    assert version.lineage.params["team"] == "fraud" and version.lineage.params["estimator"] == "Pipeline"
    assert version.description == "explicit"


def test_unknown_model_raises_typed_problem(fleet_client):
    with pytest.raises(ModelNotFound) as missing:
        fleet_client.get_model("no-such-model")
    assert missing.value.status == 404
    assert missing.value.code == "model-not-found"
    assert missing.value.instance == "/v1/models/no-such-model"
    assert "no-such-model" in missing.value.detail


async def test_async_client_reads_and_predicts(client_fleet, registered, instances):
    async with AsyncFleet(config=client_fleet.config()) as fleet:
        versions = await fleet.list_versions(MODEL)
        answer = await fleet.predict(MODEL, instances[0])
    assert registered.version in [v.version for v in versions.data]
    assert answer.model == MODEL and len(answer.predictions) == 1
