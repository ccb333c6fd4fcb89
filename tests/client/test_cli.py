"""Every fleet command of the CLI against the real fleet: ``--output json`` is the API's answer."""

from __future__ import annotations

import json
import uuid
import time

import httpx
import pytest

from mlfleet.commands.context import ExitCode
from mlfleet.commands.render import when
from mlfleet.runtime.processes import wait_until
from tests.client.conftest import MODEL, as_json, sending_traffic


def events_counted(client_fleet, api) -> bool:
    """Every event the gateway queued is written (or counted lost), and the monitor has read and counted everything
    in the stream."""
    metrics = httpx.get(f"{client_fleet.services['gateway'].url}/metrics", timeout=10).text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("mlfleet_gateway_events_")}
    lost = sum(samples.get(f'mlfleet_gateway_events_dropped_total{{reason="{reason}"}}', 0.0)
               for reason in ("write_failed", "shutdown"))  # a full queue's drops were never queued
    stats = api("monitor", "/v1/stats")
    return (samples["mlfleet_gateway_events_enqueued_total"] == samples["mlfleet_gateway_events_written_total"] + lost
            and stats["pending"] == 0 and stats["lag_s"] == 0)


@pytest.mark.parametrize(("args", "service", "path", "params"), [
    (["models", "list"], "registry", "/v1/models", {}),
    (["models", "show", MODEL], "registry", f"/v1/models/{MODEL}", {}),
    (["versions", "list", MODEL], "registry", f"/v1/models/{MODEL}/versions", {}),
    (["versions", "show", MODEL, "1"], "registry", f"/v1/models/{MODEL}/versions/1", {}),
    (["traffic", "show", MODEL], "registry", f"/v1/models/{MODEL}/traffic", {}),
    (["audit", "--model", MODEL, "--limit", "5"], "registry", "/v1/audit", {"model": MODEL, "limit": 5}),
    (["audit", "--action", "traffic.", "--before", "1000000", "--limit", "3"], "registry", "/v1/audit",
     {"action": "traffic.", "before_id": 1_000_000, "limit": 3}),
    (["metrics", MODEL, "--window", "3600"], "monitor", f"/v1/models/{MODEL}/metrics", {"window_s": 3600}),
    (["alerts", "--limit", "10"], "monitor", "/v1/alerts", {"limit": 10}),
    (["alerts", "--active"], "monitor", "/v1/alerts", {"active": "true"}),
    (["rollout", "list", MODEL], "registry", f"/v1/models/{MODEL}/rollouts", {}),
    (["rollout", "list", MODEL, "--state", "promoted", "--limit", "2"], "registry", f"/v1/models/{MODEL}/rollouts",
     {"state": "promoted", "limit": 2}),
    (["whoami"], "registry", "/v1/auth/whoami", {}),
    (["keys", "list"], "registry", "/v1/keys", {}),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_read_commands_print_the_apis_answer(cli, api, client_fleet, registered, fleet_client, instances, args, service,
                                             path, params):
    fleet_client.predict(MODEL, instances[:2])
    if service == "monitor":  # both reads must see the same counts: let the monitor count the prediction first
        wait_until(lambda: events_counted(client_fleet, api), timeout_s=30, what="prediction events counted")
    result = cli(*args, "--output", "json")
    assert as_json(result) == api(service, path, **params)


def test_read_commands_draw_tables_for_people(cli, registered, fleet_client, client_fleet, api, instances):
    listing = cli("versions", "list", MODEL).stdout
    assert "VERSION" in listing and registered.sha256[:12] in listing
    stable = fleet_client.get_version(MODEL, fleet_client.get_traffic(MODEL).stable)
    row = next(line for line in listing.splitlines() if stable.sha256[:12] in line)
    assert "stable" in row and "registered" in row, listing  # serving, and its validation state beside it
    fleet_client.predict(MODEL, instances[:1])
    wait_until(lambda: events_counted(client_fleet, api), timeout_s=30, what="the prediction counted")
    before = fleet_client.metrics(MODEL).window.start  # the window's edges, as the monitor rounds them to buckets
    drawn = cli("metrics", MODEL).stdout.replace("\n", " ")
    after = fleet_client.metrics(MODEL).window.start  # (a bucket may end while the CLI runs)
    assert any(f"{when(start)} to " in drawn for start in (before, after)) and "10 s buckets" in drawn, drawn
    shown = cli("versions", "show", MODEL, "1").stdout
    assert "user_stats:avg_amount_30d" in shown and "feast" in shown


def test_predict_prints_the_gateways_answer(cli, fleet_client, registered, instances):
    body = json.dumps({"instances": instances[:2], "routing_key": "k1"})
    printed = as_json(cli("predict", MODEL, "--json", body, "--output", "json"))
    direct = fleet_client.predict(MODEL, instances[:2], routing_key="k1").model_dump(mode="json")
    assert {k: v for k, v in printed.items() if k not in ("request_id", "trace_id")} == \
           {k: v for k, v in direct.items() if k not in ("request_id", "trace_id")}
    assert len(printed["request_id"]) >= 16


MOVING_DRIFT_FIELDS = ("evaluated_at", "history", "worst_window")
"""What may differ between two drift reports of one window: when each was computed, and the history of
windows (which the first report may extend, and the worst window is picked from)."""


def steady(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in MOVING_DRIFT_FIELDS}


def test_drift_prints_the_monitors_report(cli, api, fleet_client, registered, instances):
    for _ in range(4):
        sent = fleet_client.predict(MODEL, instances, version=registered.version)
    wait_until(lambda: fleet_client.drift(MODEL, version=registered.version).window.last_request_id == sent.request_id,
               timeout_s=15, what="the monitor has the prediction in its drift window")
    printed = as_json(cli("drift", MODEL, "--version", str(registered.version), "--output", "json"))
    answer = api("monitor", f"/v1/models/{MODEL}/drift", version=registered.version)
    assert (printed["model"], printed["version"]) == (MODEL, registered.version)
    assert printed["window"]["n"] >= printed["thresholds"]["min_samples"], "a window large enough for statistics"
    assert printed["verdict"] != "no_reference" and printed["features"]
    assert printed.keys() == answer.keys()
    assert steady(printed) == steady(answer)


def test_register_an_onnx_file_with_signature_and_profile(cli, api, registered, cli_artifacts):
    printed = as_json(cli(*cli_artifacts.register_args("--description", "from the CLI", "--output", "json")))
    assert printed == api("registry", f"/v1/models/{MODEL}/versions/{printed['version']}")
    assert printed["sha256"] == registered.sha256
    assert printed["metrics"]["auc"] >= 0.9
    assert printed["reference_profile"]["features"].keys() == set(registered.signature.input_names)


def test_models_update_changes_only_the_gates_named(cli, api, fleet_client):
    name = f"cli-gates-{uuid.uuid4().hex[:8]}"
    fleet_client.create_model(name, description="kept", gates={"min_auc": 0.9, "min_accuracy": 0.85})
    printed = as_json(cli("models", "update", name, "--min-auc", "off", "--output", "json"))
    assert printed == api("registry", f"/v1/models/{name}")
    assert (printed["gates"], printed["description"]) == ({"min_auc": None, "min_accuracy": 0.85}, "kept")
    refused = cli("models", "update", name, "--min-accuracy", "1.5", expect=2)
    assert "not in [0, 1]" in refused.stderr
    assert "nothing to change" in cli("models", "update", name, expect=2).stderr
    assert fleet_client.update_model(name, gates={"min_accuracy": 0.8}).gates.model_dump() == \
        {"min_auc": None, "min_accuracy": 0.8}, "the client sends the gates it is given, the server keeps the rest"


def test_errors_exit_with_meaningful_codes_and_problem_json(cli, client_fleet, registered):
    missing = cli("models", "show", "nope", "--output", "json", expect=ExitCode.not_found)
    problem = json.loads(missing.stderr)
    assert problem["status"] == 404 and problem["code"] == "model-not-found"
    refused = cli("traffic", "set", MODEL, "--stable", "1", "--canary", "1", "-p", "10", expect=ExitCode.refused)
    assert "canary must differ from stable" in refused.stderr
    env = client_fleet.env() | {"MLFLEET_REGISTRY_URL": "http://127.0.0.1:9"}
    unreachable = cli("models", "list", env=env, expect=ExitCode.unavailable)
    assert "127.0.0.1:9" in unreachable.stderr
    denied = cli("models", "list", env=client_fleet.env(api_key="mlf_not-a-key"), expect=ExitCode.denied)
    assert client_fleet.admin_key not in denied.stdout + denied.stderr
    assert "MLFLEET_API_KEY_FILE" in denied.stderr, "a 401 says where the CLI takes its key from"


def test_rollout_with_the_cli_watch_it_approve_it_then_roll_back(cli, api, fleet_client, registered, instances,
                                                                fraud_estimator, training_data, client_fleet):
    candidate = fleet_client.register(MODEL, fraud_estimator, training_data.x_train, labels=training_data.y_train,
                                      holdout=(training_data.x_test, training_data.y_test),
                                      lineage={"params": {"attempt": "canary"}}, description="candidate")
    fleet_client.set_traffic(MODEL, stable=registered.version)
    started = as_json(cli("rollout", "start", MODEL, "--candidate", str(candidate.version), "--steps", "50",
                          "--interval", "1", "--min-requests", "5", "--max-p99-latency-ratio", "100",
                          "--max-error-rate-increase", "1", "--require-approval", "--output", "json"))
    assert started == api("registry", f"/v1/models/{MODEL}/rollouts/{started['id']}") | {
        "updated_at": started["updated_at"], "history": started["history"]}
    assert started["state"] == "running" and started["canary_percent"] == 50
    with sending_traffic(fleet_client, instances):
        deadline = time.monotonic() + 60
        while fleet_client.get_rollout(MODEL, started["id"]).state.value == "running":
            assert time.monotonic() < deadline, "the rollout was never judged"
            time.sleep(0.3)
    status = as_json(cli("rollout", "status", MODEL, "--output", "json"))
    assert status["state"] == "awaiting_approval", status
    assert any("approval" in reason for reason in status["history"][-1]["reasons"]), status["history"]
    assert "awaiting_approval" in cli("rollout", "status", MODEL).stdout
    cli("rollout", "approve", MODEL, "--reason", "looks good", "--output", "json")
    lines = cli("rollout", "status", MODEL, "--watch", "--every", "0.2", "--output", "json").stdout.splitlines()
    assert json.loads(lines[-1])["state"] == "promoted"
    assert api("registry", f"/v1/models/{MODEL}/traffic")["stable"] == candidate.version
    rolled_back = as_json(cli("rollback", MODEL, "--reason", "test", "--output", "json"))
    assert rolled_back == api("registry", f"/v1/models/{MODEL}/traffic")
    assert rolled_back["stable"] == registered.version and rolled_back["canary"] is None
    actions = [e["action"] for e in as_json(cli("audit", "--model", MODEL, "--limit", "20", "--output", "json"))["data"]]
    assert {"rollout.start", "rollout.promote", "traffic.rollback"} <= set(actions), actions


def test_rollout_pause_resume_abort_and_a_failed_watch(cli, fleet_client, registered, fraud_estimator, training_data):
    candidate = fleet_client.register(MODEL, fraud_estimator, training_data.x_train, labels=training_data.y_train,
                                      holdout=(training_data.x_test, training_data.y_test), reuse_existing=True)
    other = fleet_client.list_versions(MODEL).data[-1].version
    fleet_client.set_traffic(MODEL, stable=registered.version)
    target = other if other != registered.version else candidate.version
    started = as_json(cli("rollout", "start", MODEL, "--candidate", str(target), "--interval", "600",
                          "--output", "json"))
    rollout = str(started["id"])
    assert as_json(cli("rollout", "pause", MODEL, "--id", rollout, "--output", "json"))["state"] == "paused"
    assert as_json(cli("rollout", "resume", MODEL, "--id", rollout, "--output", "json"))["state"] == "running"
    cli("rollout", "start", MODEL, "--candidate", str(target), expect=ExitCode.conflict)
    assert as_json(cli("rollout", "abort", MODEL, "--output", "json"))["state"] == "aborted"
    watched = cli("rollout", "status", MODEL, "--id", rollout, "--watch", "--output", "json",
                  expect=ExitCode.rollout_failed)
    assert json.loads(watched.stdout.splitlines()[-1])["state"] == "aborted"


def test_text_from_the_services_is_printed_as_it_is_never_read_as_markup(cli, fleet_client):
    name = f"cli-brackets-{uuid.uuid4().hex[:8]}"
    fleet_client.create_model(name, description="trained on [/data/fraud.parquet] with [bold]amount[usd][/bold]")
    shown = cli("models", "show", name).stdout
    assert "trained on [/data/fraud.parquet] with [bold]amount[usd][/bold]" in " ".join(shown.split())
    refused = cli("models", "show", "bad[name]", expect=6)
    assert refused.stderr.startswith("error:") and "[" in refused.stderr, refused.stderr
