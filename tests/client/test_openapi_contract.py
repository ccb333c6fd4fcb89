"""The client's typed models and paths against the live OpenAPI documents of the running services."""

from __future__ import annotations

import inspect
import re

import httpx
import pytest

from mlfleet.client import calls
from mlfleet.client import models as m
from tests.client.schemas import component, differences

# (client model, service, OpenAPI component name, sent by the client?)
CONTRACT = [
    (m.ModelCreate, "registry", "ModelCreate", True),
    (m.ModelUpdate, "registry", "ModelUpdate", True),
    (m.ModelPublic, "registry", "ModelPublic", False),
    (m.ModelList, "registry", "ModelList", False),
    (m.Gates, "registry", "Gates", False),
    (m.VersionPublic, "registry", "VersionPublic", False),
    (m.VersionList, "registry", "VersionList", False),
    (m.Lineage, "registry", "Lineage", False),
    (m.FaultInjection, "registry", "FaultInjection", False),
    (m.Signature, "registry", "Signature", False),
    (m.SignatureInput, "registry", "SignatureInput", False),
    (m.SignatureOutput, "registry", "SignatureOutput", False),
    (m.TrafficUpdate, "registry", "TrafficUpdate", True),
    (m.TrafficPublic, "registry", "TrafficPublic", False),
    (m.RolloutCreate, "registry", "RolloutCreate", True),
    (m.RolloutChecks, "registry", "RolloutChecks", False),
    (m.RolloutPublic, "registry", "RolloutPublic", False),
    (m.RolloutStepPublic, "registry", "RolloutStepPublic", False),
    (m.RolloutList, "registry", "RolloutList", False),
    (m.AuditPublic, "registry", "AuditPublic", False),
    (m.AuditList, "registry", "AuditList", False),
    (m.KeyCreate, "registry", "KeyCreate", True),
    (m.KeyPublic, "registry", "KeyPublic", False),
    (m.KeyCreated, "registry", "KeyCreated", False),
    (m.KeyList, "registry", "KeyList", False),
    (m.VersionSummary, "registry", "VersionSummary", False),
    (m.Identity, "registry", "Identity", False),
    (m.PredictRequest, "gateway", "PredictRequest", True),
    (m.PredictResponse, "gateway", "PredictResponse", False),
    (m.Prediction, "gateway", "Prediction", False),
    (m.RoutesPublic, "gateway", "RoutesPublic", False),
    (m.RoutingTable, "gateway", "RoutingTable", False),
    (m.ModelRoute, "gateway", "ModelRoute", False),
    (m.VersionRoute, "gateway", "VersionRoute", False),
    (m.ModelMetrics, "monitor", "ModelMetrics", False),
    (m.VersionMetrics, "monitor", "VersionMetrics", False),
    (m.Window, "monitor", "Window", False),
    (m.LatencySummary, "monitor", "LatencySummary", False),
    (m.LatencyHistogram, "monitor", "LatencyHistogram", False),
    (m.ScoreHistogram, "monitor", "ScoreHistogram", False),
    (m.Quality, "monitor", "Quality", False),
    (m.FeedbackItem, "monitor", "FeedbackItem", True),
    (m.FeedbackResult, "monitor", "FeedbackResult", False),
    (m.FeedbackReport, "monitor", "FeedbackReport", False),
    (m.DriftReport, "monitor", "DriftReport", False),
    (m.DriftThresholds, "monitor", "DriftThresholds", False),
    (m.LiveWindowInfo, "monitor", "LiveWindowInfo", False),
    (m.DriftHistogram, "monitor", "Histogram", False),
    (m.FeatureDrift, "monitor", "FeatureDrift", False),
    (m.Example, "monitor", "Example", False),
    (m.DriftPoint, "monitor", "DriftPoint", False),
    (m.AlertPublic, "monitor", "AlertPublic", False),
    (m.AlertList, "monitor", "AlertList", False),
    (m.FeatureViewList, "features", "FeatureViewList", False),
    (m.FeatureViewPublic, "features", "FeatureViewPublic", False),
    (m.FieldPublic, "features", "FieldPublic", False),
]


@pytest.fixture(scope="module")
def openapi(client_fleet) -> dict[str, dict]:
    return {name: httpx.get(f"{service.url}/openapi.json", timeout=10).json()
            for name, service in client_fleet.services.items()}


@pytest.mark.parametrize(("model", "service", "name", "request_body"), CONTRACT,
                         ids=[f"{service}:{name}" for _, service, name, _ in CONTRACT])
def test_client_model_matches_the_service_schema(openapi, model, service, name, request_body):
    server = component(openapi[service], name, request=request_body)
    assert server is not None, f"{service} has no schema {name!r} any more"
    definitions = openapi[service]["components"]["schemas"]
    assert differences(model, server, definitions, request=request_body) == []


def sample_calls() -> list[calls.Call]:
    """One call of every operation the client knows, with placeholder arguments."""
    made = []
    for name, builder in inspect.getmembers(calls, inspect.isfunction):
        if builder.__module__ != calls.__name__ or name.startswith("_"):
            continue
        if name == "rollout_action":
            made += [builder("m", 1, action) for action in calls.ROLLOUT_ACTIONS]
            continue
        arguments = {
            "model": "m", "version": 1, "rollout_id": 1, "key_id": 1, "name": "n", "role": "viewer",
            "artifact": b"", "metadata": m.VersionCreate(signature={"inputs": [{"name": "x"}]}),
            "update": m.TrafficUpdate(stable=1), "rollout": m.RolloutCreate(candidate=2),
            "instances": [{"x": 1}], "items": [m.FeedbackItem(request_id="r", label=1)],
        }
        parameters = inspect.signature(builder).parameters.values()
        made.append(builder(**{p.name: arguments[p.name] for p in parameters if p.default is inspect.Parameter.empty}))
    return made


def test_every_client_operation_exists_in_its_service(openapi):
    missing = []
    for call in sample_calls():
        paths = openapi[call.service]["paths"]
        operations = [(re.sub(r"\{[^/]+\}", "[^/]+", path), methods) for path, methods in paths.items()]
        if not any(re.fullmatch(pattern, call.path) and call.method.lower() in methods for pattern, methods in operations):
            missing.append(f"{call.service}: {call.method} {call.path}")
    assert len(sample_calls()) >= 25
    assert missing == []
