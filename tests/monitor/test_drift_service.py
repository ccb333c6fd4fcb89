"""Drift end to end: a real registry holds the reference profile, a real monitor judges live windows.

Stationary traffic from the training distribution runs through 50 windows without a single
drift alert; then one window of the demo's 2020 ``shift`` raises a rollback alert naming exactly
the features that moved, and both webhooks (Alertmanager body, Kubeflow run) receive it.
"""

from __future__ import annotations

import json
import re

import httpx

from mlfleet.runtime.processes import wait_until
from services.common.redis import PREDICTIONS_STREAM
from services.monitor.reports import history_key
from services.monitor.settings import MonitorSettings
from services.monitor.store import PREFIX
from tests.monitor.demo_model import MOVED
from tests.monitor.factories import publish
from tests.results import results_file

WINDOW = 500
WINDOWS = 50
RESULTS = results_file("monitor-drift.json")


def newest_point(client: httpx.Client, model: str, version: int) -> dict | None:
    """The version's newest judged window; ``None`` while there is none, or while the monitor has consumed no event
    of it yet (404: a slow machine's first poll can come before the consumer's first batch)."""
    response = client.get(f"/v1/models/{model}/drift", params={"version": version, "history": 1})
    if response.status_code == 404:
        return None
    response.raise_for_status()
    history = response.json()["history"]
    return history[0] if history else None


def send_window(client: httpx.Client, stream_client, events, model: str, version: int) -> dict:
    """Publish one window of events and wait until the monitor has judged exactly that window."""
    publish(stream_client, PREDICTIONS_STREAM, events)
    last = events[-1].request_id

    def judged() -> bool:
        point = newest_point(client, model, version)
        return point is not None and point["window"]["last_request_id"] == last and point["window"]["n"] == WINDOW
    wait_until(judged, timeout_s=60, interval_s=0.05, what="window judged")
    return newest_point(client, model, version)


def gauge(metrics: str, **labels: str) -> float:
    pattern = r"mlfleet_monitor_drift\{" + ",".join(f'{k}="{re.escape(v)}"' for k, v in sorted(labels.items()))
    match = re.search(pattern + r"\} (\S+)", metrics)
    assert match, f"no gauge {labels}"
    return float(match.group(1))


def test_stationary_traffic_never_alarms_and_the_shift_alerts_within_one_window(
        demo_registry, run_monitor, stream_client, receiver):
    model, version, demo = demo_registry.model, demo_registry.version, demo_registry.demo
    monitor = run_monitor(
        **demo_registry.monitor_settings(), drift_interval_s=0.1, drift_window_size=WINDOW, samples_per_s=0,
        alert_webhook_urls=receiver.url("/alerts"), retrain_webhook_url=receiver.url("/runs"),
        retrain_pipeline_id="fraud-retrain",
    )
    client = httpx.Client(base_url=monitor.url, timeout=10)

    stationary = []
    for w in range(WINDOWS):
        rows = demo.holdout.iloc[w * WINDOW:(w + 1) * WINDOW]
        stationary.append(send_window(client, stream_client, demo.events(rows, model=model, version=version),
                                      model, version))
    history = client.get(f"/v1/models/{model}/drift", params={"version": version, "history": 1000}).json()["history"]
    false_alarms = sum(point["verdict"] != "ok" for point in history)
    drift_alerts = client.get("/v1/alerts", params={"rule": "drift"}).json()
    assert len(history) >= WINDOWS
    assert {p["verdict"] for p in stationary} == {"ok"}
    assert (false_alarms, drift_alerts["count"]) == (0, 0), history[:3]

    shifted = demo.events(demo.shifted.iloc[:WINDOW], model=model, version=version)
    point = send_window(client, stream_client, shifted, model, version)
    assert point["verdict"] == "rollback"
    assert set(point["drifted_features"]) == MOVED

    alerts = client.get("/v1/alerts", params={"rule": "drift", "model": model}).json()["data"]
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert["severity"], alert["action"], alert["version"]) == ("critical", "rollback", version)
    assert set(alert["features"]) == MOVED
    assert all(alert["values"][f"psi:{f}"] > 0 for f in MOVED)

    wait_until(lambda: receiver.on("/alerts") and receiver.on("/runs"), timeout_s=30, what="webhooks called")
    page = receiver.on("/alerts")[0]
    assert (page["version"], page["status"], len(page["alerts"])) == ("4", "firing", 1)
    labels = page["alerts"][0]["labels"]
    assert labels == {"alertname": "MlfleetDrift", "severity": "critical", "model": model, "version": str(version),
                      "rule": "drift", "action": "rollback", "service": "mlfleet-monitor"}
    assert set(page["alerts"][0]["annotations"]["drifted_features"].split(",")) == MOVED
    assert page["alerts"][0]["startsAt"].endswith("Z") and page["alerts"][0]["fingerprint"] == alert["fingerprint"]
    run = receiver.on("/runs")[0]
    assert run["pipeline_version_reference"] == {"pipeline_id": "fraud-retrain"}
    assert run["display_name"].startswith(f"retrain-{model}-v{version}-")
    parameters = run["runtime_config"]["parameters"]
    assert (parameters["model"], parameters["base_version"], parameters["reason"]) == (model, version, "drift")
    assert set(parameters["drifted_features"]) == MOVED
    assert parameters["data_window_start"] <= parameters["data_window_end"]

    report = client.get(f"/v1/models/{model}/drift", params={"version": version}).json()
    assert (report["verdict"], report["window"]["n"], report["window"]["kind"]) == ("rollback", WINDOW, "count")
    assert report["corrected_alpha"] == report["thresholds"]["alpha"] / (len(report["features"]) + 1)
    by_name = {f["feature"]: f for f in report["features"]}
    assert {n for n, f in by_name.items() if f["action"] != "none"} == MOVED
    assert by_name["distance_from_home_km"]["ks"] > 0.15 and by_name["is_online"]["kind"] == "categorical"
    assert by_name["is_online"]["js"] > 0.1 and by_name["is_online"]["chi2"] > 0
    for feature in by_name.values():
        histogram = feature["histogram"]
        assert len(histogram["reference"]) == len(histogram["live"]) > 0
    assert report["scores"]["feature"] == "__score__"
    shifted_ids = {e.request_id for e in shifted}
    trace_of = {e.request_id: e.trace_id for e in shifted}
    worst = report["worst_window"]
    assert worst["verdict"] == "rollback" and worst["examples"]
    assert all(e["request_id"] in shifted_ids and e["trace_id"] == trace_of[e["request_id"]] for e in worst["examples"])

    # a retired version's drift history goes with its aggregates
    retention = demo_registry.monitor_settings().get("bucket_ttl_s", MonitorSettings.model_fields["bucket_ttl_s"].default)
    for key in (history_key(model, version), f"{PREFIX}:drift-last:{model}:{version}",
                f"{PREFIX}:drift-worst:{model}:{version}"):
        assert 0 < stream_client.ttl(key) <= retention, key

    whole_hour = client.get(f"/v1/models/{model}/drift",
                            params={"version": version, "window": "time", "window_s": 3600}).json()
    assert whole_hour["window"]["n"] == (WINDOWS + 1) * WINDOW

    metrics = client.get("/metrics").text
    labels = {"model": model, "version": str(version)}
    assert gauge(metrics, **labels, feature="distance_from_home_km", statistic="ks") > 0.15
    assert gauge(metrics, **labels, feature="is_online", statistic="psi") > 0.25
    assert f'mlfleet_monitor_drift_verdict{{model="{model}",version="{version}"}} 2.0' in metrics

    RESULTS.write_text(json.dumps({
        "stationary_windows": len(history), "window_instances": WINDOW, "false_alarms": false_alarms,
        "max_stationary_drift_score": max(p["score"] for p in history),
        "shift_verdict": point["verdict"], "shift_drifted_features": sorted(point["drifted_features"]),
    }, indent=2) + "\n")
    print(f"\nstationary: {len(history)} windows, {false_alarms} false alarms; "
          f"shift: {point['verdict']} on {sorted(point['drifted_features'])}")
    client.close()


def test_a_version_without_a_reference_gets_no_verdict_and_unknown_ones_are_404(
        demo_registry, run_monitor, stream_client):
    demo = demo_registry.demo
    monitor = run_monitor(**demo_registry.monitor_settings(), drift_interval_s=0.1)
    events = demo.events(demo.holdout.iloc[:300], model="unregistered", version=3)
    publish(stream_client, PREDICTIONS_STREAM, events)
    with httpx.Client(base_url=monitor.url, timeout=10) as client:
        wait_until(lambda: client.get("/v1/stats").json()["events_processed"] == len(events), timeout_s=30,
                   what="events counted")
        report = client.get("/v1/models/unregistered/drift").json()
        assert (report["version"], report["verdict"], report["features"]) == (3, "no_reference", [])
        assert report["window"]["n"] == 300

        missing = client.get("/v1/models/unregistered/drift", params={"version": 9})
        assert (missing.status_code, missing.headers["content-type"]) == (404, "application/problem+json")
        assert missing.json()["code"] == "version-not-found"
        assert client.get("/v1/models/nothing/drift").json()["code"] == "model-not-found"
        bad = client.get("/v1/models/unregistered/drift", params={"window": "sliding"})
        assert (bad.status_code, bad.json()["code"]) == (422, "invalid-input")


def test_a_window_too_small_to_judge_exports_no_drift_statistics(demo_registry, run_monitor, stream_client):
    """A PSI over 20 instances is noise (above 0.25 in most such windows of unchanged traffic): exported, it paged
    through a Prometheus rule on the raw statistic for every quiet canary."""
    model, version, demo = demo_registry.model, demo_registry.version, demo_registry.demo
    monitor = run_monitor(**demo_registry.monitor_settings(), drift_interval_s=0.1, samples_per_s=0)
    publish(stream_client, PREDICTIONS_STREAM, demo.events(demo.holdout.iloc[:20], model=model, version=version))
    labels = f'model="{model}",version="{version}"'
    with httpx.Client(base_url=monitor.url, timeout=10) as client:
        wait_until(lambda: f"mlfleet_monitor_drift_window_instances{{{labels}}} 20.0" in client.get("/metrics").text,
                   timeout_s=30, what="a drift pass over the 20 instances")
        metrics = client.get("/metrics").text
    assert f"mlfleet_monitor_drift_verdict{{{labels}}} -1.0" in metrics
    assert not re.search(r"^mlfleet_monitor_drift\{[^}]*" + re.escape(f'version="{version}"'), metrics, re.MULTILINE)
