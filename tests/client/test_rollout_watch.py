"""``mlfleet rollout status --watch`` follows a real rollout live and ends with its outcome's exit code."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mlfleet.client.models import FaultInjection
from mlfleet.client.packaging import package_version
from mlfleet.commands.context import ExitCode
from tests.client.conftest import MODEL, as_json, sending_traffic


def register_candidate(fleet_client, estimator, data, fault_injection: FaultInjection):
    """A new version of the fraud model; ``fault_injection`` makes Triton fail or slow its inferences."""
    upload = package_version(estimator, data.x_train, labels=data.y_train, holdout=(data.x_test, data.y_test),
                             feature_views=fleet_client.feature_views().data, description="watched candidate")
    metadata = upload.metadata.model_copy(update={"fault_injection": fault_injection})
    return fleet_client.upload(MODEL, dataclasses.replace(upload, metadata=metadata))


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("fault_injection", "final_state", "exit_code"), [
    (FaultInjection(), "promoted", ExitCode.ok),
    (FaultInjection(fail_inference=True), "rolled_back", ExitCode.rollout_failed),
], ids=["healthy-candidate-promoted", "failing-candidate-rolled-back"])
def test_watch_ends_with_the_rollouts_outcome(cli, fleet_client, registered, instances, fraud_estimator,
                                             training_data, fault_injection, final_state, exit_code):
    baseline = fleet_client.get_traffic(MODEL).stable
    candidate = register_candidate(fleet_client, fraud_estimator, training_data, fault_injection)
    with sending_traffic(fleet_client, instances):
        started = as_json(cli("rollout", "start", MODEL, "--candidate", str(candidate.version), "--steps", "50",
                              "--interval", "1", "--min-requests", "5", "--max-p99-latency-ratio", "100",
                              "--output", "json"))
        watched = cli("rollout", "status", MODEL, "--id", str(started["id"]), "--watch", "--every", "0.2",
                      "--output", "json", expect=exit_code)
    states = [json.loads(line)["state"] for line in watched.stdout.splitlines()]
    assert states[0] == "running" and states[-1] == final_state, states
    traffic = fleet_client.get_traffic(MODEL)
    assert (traffic.stable, traffic.canary) == (candidate.version if final_state == "promoted" else baseline, None)
    if traffic.stable != baseline:
        fleet_client.set_traffic(MODEL, stable=baseline, wait=True)
