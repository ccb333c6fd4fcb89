"""Unit tests of the alert rules, the webhook bodies, the retry policy and live quality."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Callable

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from mlfleet.runtime.processes import free_port
from services.common.profiles import build_reference_profile
from services.monitor.alerts import AlertRules, drift_alert, fingerprint, metric_alerts
from services.monitor.drift import DriftThresholds, compare, parse_reference, verdict
from services.monitor.feedback import predicted_class, quality
from services.monitor.schemas import AlertPublic, DriftReport, LatencySummary, LiveWindowInfo, Quality
from services.monitor.settings import MonitorSettings
from services.monitor.sinks import (PipelineRef, RetryPolicy, Sink, SinkDispatcher, alertmanager_body, build_sinks,
                                    OncePerModel, retrain_body)
from services.monitor.stats import summarize
from tests.monitor.receiver import Receiver


async def until(condition: Callable[[], object], *, timeout_s: float = 5.0) -> None:
    """Wait until ``condition()`` (or what it returns awaited) is true, polling every 10 ms, at most ``timeout_s``;
    the caller asserts what it expects afterwards."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        await asyncio.sleep(0.01)


def version_metrics(*, requests: int, errors: int = 0, p99: float = 5.0, accuracy: float | None = None,
                    labelled: int = 100):
    metrics = summarize(2, {"requests": requests, "errors": errors})
    metrics.latency_ms = LatencySummary(p50=1.0, p95=2.0, p99=p99, mean=1.0)
    if accuracy is not None:
        metrics.quality = Quality(labelled=labelled, accuracy=accuracy, precision=0.5, recall=0.5, f1=0.5, roc_auc=0.7)
    return metrics


def rules_fired(metrics, rules=AlertRules()) -> list[str]:
    return [a.rule for a in metric_alerts("fraud", metrics, rules, window=(0.0, 300.0), now=300.0)]


def test_each_rule_fires_only_past_its_threshold_and_minimum_volume():
    assert rules_fired(version_metrics(requests=100, errors=4, p99=90, accuracy=0.9)) == []
    assert rules_fired(version_metrics(requests=100, errors=6, p99=150, accuracy=0.8)) == ["accuracy", "error_rate", "latency"]
    assert rules_fired(version_metrics(requests=10, errors=6, p99=150, accuracy=0.8, labelled=10)) == []


def test_fingerprints_separate_rule_model_version_and_action():
    prints = {fingerprint(*key) for key in [("drift", "fraud", 1, "retrain"), ("drift", "fraud", 1, "rollback"),
                                            ("drift", "fraud", 2, "retrain"), ("latency", "fraud", 1, None)]}
    assert len(prints) == 4 and fingerprint("drift", "fraud", 1, "retrain") == fingerprint("drift", "fraud", 1, "retrain")


ALERT = AlertPublic(id="a1", fingerprint="f1", rule="drift", severity="critical", action="rollback", model="fraud",
                    version=3, summary="fraud v3: data drift in amount", description="moved", values={"psi:amount": 0.4},
                    features=["amount"], window_start=1_700_000_000.0, window_end=1_700_000_600.0, fired_at=1_700_000_601.5)


def test_the_webhook_body_is_what_alertmanager_sends():
    body = alertmanager_body(ALERT, monitor_url="http://monitor:8083")
    assert set(body) == {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
                         "commonAnnotations", "externalURL", "alerts"}
    (alert,) = body["alerts"]
    assert set(alert) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert alert["startsAt"] == "2023-11-14T22:23:21.500Z" and alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["labels"]["alertname"] == "MlfleetDrift" and alert["generatorURL"] == "http://monitor:8083/dashboard"


def test_the_retraining_body_is_a_kubeflow_pipelines_run():
    body = retrain_body(ALERT, PipelineRef("p-1", "pv-2", "exp-3"))
    assert body["pipeline_version_reference"] == {"pipeline_id": "p-1", "pipeline_version_id": "pv-2"}
    assert body["experiment_id"] == "exp-3" and body["display_name"] == "retrain-fraud-v3-20231114T222321Z"
    parameters = body["runtime_config"]["parameters"]
    assert (parameters["data_window_start"], parameters["data_window_end"]) == ("2023-11-14T22:13:20.000Z",
                                                                              "2023-11-14T22:23:20.000Z")


def test_only_drift_and_accuracy_alerts_trigger_retraining():
    sinks = build_sinks(webhook_urls=["http://a", "http://b"], retrain_url="http://kfp", pipeline=PipelineRef("p"),
                        monitor_url="http://m")
    retrain = sinks[-1]
    assert [s.name for s in sinks] == ["webhook-0", "webhook-1", "retrain"]
    assert retrain.accepts(ALERT) and not retrain.accepts(ALERT.model_copy(update={"rule": "latency"}))


def test_retries_back_off_exponentially_up_to_a_cap():
    policy = RetryPolicy(max_attempts=10, initial_s=0.5, max_s=4.0)
    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_webhook_urls_are_read_comma_separated_or_as_json(monkeypatch):
    monkeypatch.setenv("MLFLEET_MONITOR_ALERT_WEBHOOK_URLS", "http://a/x, http://b/y")
    assert MonitorSettings().alert_webhook_urls == ["http://a/x", "http://b/y"]
    monkeypatch.setenv("MLFLEET_MONITOR_ALERT_WEBHOOK_URLS", '["http://c"]')
    monkeypatch.setenv("MLFLEET_MONITOR_DRIFT_OVERRIDES", '{"fraud": {"ks": 0.2}}')
    settings = MonitorSettings()
    assert settings.alert_webhook_urls == ["http://c"]
    assert settings.drift_thresholds("fraud").ks == 0.2 and settings.drift_thresholds("churn").ks == 0.15


def test_the_registry_key_comes_from_its_file_first(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("mlf_secret\n")
    assert MonitorSettings(registry_api_key="other", registry_api_key_file=key_file).registry_key() == "mlf_secret"
    assert MonitorSettings(registry_api_key="other").registry_key() == "other"
    assert MonitorSettings().registry_key() is None


@pytest.mark.parametrize(("settings", "rate"), [
    ({}, 500.0),
    ({"drift_window": "time", "drift_window_s": 3600, "samples_max": 5000}, 5000 / 3600),
    ({"drift_window": "time", "drift_window_s": 3600, "samples_max": 5000, "samples_per_s": 0}, 5000 / 3600),
    ({"drift_window": "time", "drift_window_s": 5, "samples_max": 5000}, 500.0),
])
def test_time_windows_spread_the_samples_over_the_window(settings, rate):
    assert MonitorSettings(**settings).sample_rate_per_s() == pytest.approx(rate)


def test_quality_equals_scikit_learn():
    rng = np.random.default_rng(5)
    scores = rng.uniform(0, 1, 300)
    truth = (rng.uniform(0, 1, 300) < scores).astype(int)
    predicted = (scores >= 0.5).astype(int)
    result = quality(list(zip(scores, predicted, truth)))
    assert result.model_dump() == pytest.approx({
        "labelled": 300, "accuracy": accuracy_score(truth, predicted), "precision": precision_score(truth, predicted),
        "recall": recall_score(truth, predicted), "f1": f1_score(truth, predicted), "roc_auc": roc_auc_score(truth, scores),
    })
    assert quality([]) is None
    assert quality([(0.2, 0, 0), (0.1, 0, 0)]).roc_auc is None


@pytest.mark.parametrize(("labels", "scores", "expected"), [([1], [0.1], 1), (["0"], [0.9], 0), ([True], [0.1], 1),
                                                             (["fraud"], [0.7], 1), ([], [0.3], 0)])
def test_the_predicted_class_is_the_logged_label_or_the_score(labels, scores, expected):
    assert predicted_class(labels, scores, 0) == expected


@pytest.mark.parametrize(("labels", "positive", "expected"), [([0], 0, 1), ([1], 0, 0), (["fraud"], "fraud", 1),
                                                               (["ok"], "fraud", 0), (["b"], "c", 0)])
def test_the_predicted_class_is_positive_when_the_label_is_the_models_positive_class(labels, positive, expected):
    """A model whose positive class is 0 (or one of three): the logged label alone would read "0" as negative."""
    assert predicted_class(labels, [0.4], 0, positive) == expected


def test_a_drift_alert_names_what_asked_for_its_action():
    """The scores ask for a rollback (PSI far above 0.25) and one input only for retraining: the page must send the
    on-call to the scores, with their statistics, not to the input."""
    rng = np.random.default_rng(4)
    thresholds = DriftThresholds()
    reference = parse_reference(build_reference_profile({"x": rng.normal(size=50_000)}, rng.beta(2, 5, 50_000)))
    features, scores = compare(reference, {"x": rng.normal(0.45, 1, 1_000)}, rng.beta(5, 2, 1_000), thresholds)
    assert ([f.action for f in features], scores.action) == (["retrain"], "rollback")
    outcome = verdict([*features, scores], n=1_000, thresholds=thresholds, has_reference=True)
    report = DriftReport(model="m", version=1, evaluated_at=0.0, thresholds=thresholds, corrected_alpha=0.025,
                         window=LiveWindowInfo(kind="count", size=1_000, window_s=None, n=1_000, start=None, end=None,
                                               last_request_id=None),
                         verdict=outcome, drifted_features=["x"], features=features, scores=scores, examples=[],
                         worst_window=None, history=[])
    alert = drift_alert(report, now=0.0)
    assert (alert.severity, alert.action, alert.summary) == ("critical", "rollback",
                                                             "m v1: data drift in the prediction scores; less in x")
    assert "x moved less (asks to retrain)" in alert.description
    assert alert.values["psi:__score__"] == pytest.approx(scores.psi) and alert.values["ks:x"] == pytest.approx(features[0].ks)
    assert alert.features == ["x"]


async def test_a_sink_that_cannot_send_one_alert_counts_it_failed_and_sends_the_next():
    """An alert whose body or URL cannot be used (httpx's InvalidURL is no HTTPError) must not end the sink's
    worker: every later alert of that sink would be queued and never sent."""
    receiver = Receiver()
    outcomes: list[tuple[str, str]] = []

    def body(alert: AlertPublic) -> dict:
        if alert.id == "bad":
            raise ValueError("unusable alert")
        return alertmanager_body(alert, monitor_url="http://monitor")

    dispatcher = SinkDispatcher([Sink("hook", receiver.url("/hook"), body)], http=httpx.AsyncClient(timeout=5),
                                retry=RetryPolicy(max_attempts=1, initial_s=0.01, max_s=0.01), queue_size=10,
                                on_outcome=lambda sink, outcome: outcomes.append((sink, outcome)))
    dispatcher.start()
    try:
        dispatcher.submit(ALERT.model_copy(update={"id": "bad"}))
        dispatcher.submit(ALERT)
        await until(lambda: len(outcomes) == 2)
    finally:
        await dispatcher.stop()
        receiver.stop()
    assert outcomes == [("hook", "failed"), ("hook", "delivered")]
    assert len(receiver.on("/hook")) == 1


async def test_alerts_still_queued_or_in_delivery_at_shutdown_are_counted_dropped():
    outcomes: list[str] = []
    dead = f"http://127.0.0.1:{free_port()}/hook"
    dispatcher = SinkDispatcher([Sink("hook", dead, lambda alert: {"id": alert.id})], http=httpx.AsyncClient(timeout=5),
                                retry=RetryPolicy(max_attempts=5, initial_s=30, max_s=30), queue_size=10,
                                on_outcome=lambda sink, outcome: outcomes.append(outcome))
    dispatcher.start()
    for number in range(3):
        dispatcher.submit(ALERT.model_copy(update={"id": f"a{number}"}))
    await until(lambda: outcomes)  # the first delivery failed once and waits to retry; the other two are queued
    await dispatcher.stop()
    assert outcomes == ["retried", "dropped", "dropped", "dropped"]


async def test_one_retraining_run_per_model_and_interval_across_replicas(monitor_redis_url):
    """A drift alert's reminders, and several versions drifting together, start one run per model, not one each."""
    receiver = Receiver()
    client = aioredis.from_url(monitor_redis_url)
    outcomes: list[str] = []
    model = f"m{uuid.uuid4().hex[:8]}"
    replicas = [SinkDispatcher(build_sinks(webhook_urls=[], retrain_url=receiver.url("/runs"), pipeline=PipelineRef("p"),
                                           monitor_url="http://monitor", retrain_gate=OncePerModel(client, 3600)),
                               http=httpx.AsyncClient(timeout=5), retry=RetryPolicy(1, 0.01, 0.01), queue_size=10,
                               on_outcome=lambda sink, outcome: outcomes.append(outcome)) for _ in range(2)]
    drift = ALERT.model_copy(update={"rule": "drift", "action": "retrain", "model": model})
    for replica in replicas:
        replica.start()
    try:
        for number, replica in enumerate(replicas * 2):
            replica.submit(drift.model_copy(update={"id": f"d{number}", "version": 3 + number % 2}))
        replicas[0].submit(drift.model_copy(update={"id": "other", "model": f"{model}-b"}))
        await until(lambda: len(outcomes) == 5)
    finally:
        for replica in replicas:
            await replica.stop()
        receiver.stop()
        await client.aclose()
    assert sorted(outcomes) == ["delivered", "delivered", "suppressed", "suppressed", "suppressed"]
    assert sorted(run["display_name"].split("-v")[0] for run in receiver.on("/runs")) == [
        f"retrain-{model}", f"retrain-{model}-b"]


async def test_a_retraining_run_that_was_not_delivered_gives_its_slot_back(monitor_redis_url):
    """A run request the pipeline refused (every attempt failed) started nothing: the model's next drift alert must
    not be suppressed for the whole interval because of it."""
    receiver = Receiver()
    client = aioredis.from_url(monitor_redis_url)
    outcomes: list[str] = []
    model = f"m{uuid.uuid4().hex[:8]}"
    gate = OncePerModel(client, 3600)
    sinks = build_sinks(webhook_urls=[], retrain_url=f"http://127.0.0.1:{free_port()}/runs", pipeline=PipelineRef("p"),
                        monitor_url="http://monitor", retrain_gate=gate)
    down = SinkDispatcher(sinks, http=httpx.AsyncClient(timeout=5), retry=RetryPolicy(2, 0.01, 0.01), queue_size=10,
                          on_outcome=lambda sink, outcome: outcomes.append(outcome))
    up = SinkDispatcher(build_sinks(webhook_urls=[], retrain_url=receiver.url("/runs"), pipeline=PipelineRef("p"),
                                    monitor_url="http://monitor", retrain_gate=gate),
                        http=httpx.AsyncClient(timeout=5), retry=RetryPolicy(1, 0.01, 0.01), queue_size=10,
                        on_outcome=lambda sink, outcome: outcomes.append(outcome))
    drift = ALERT.model_copy(update={"rule": "drift", "action": "retrain", "model": model})
    try:
        down.start()
        down.submit(drift.model_copy(update={"id": "refused"}))
        await until(lambda: "failed" in outcomes)
        assert outcomes == ["retried", "failed"]

        async def slot_free() -> bool:  # the slot is given back just after the failure is counted
            return not await client.exists(f"mlfleet:monitor:retrain:last:{model}")

        await until(slot_free)
        assert await client.exists(f"mlfleet:monitor:retrain:last:{model}") == 0
        up.start()
        up.submit(drift.model_copy(update={"id": "next"}))
        up.submit(drift.model_copy(update={"id": "reminder"}))
        await until(lambda: len(outcomes) == 4)
    finally:
        await down.stop()
        await up.stop()
        receiver.stop()
        await client.aclose()
    assert outcomes[2:] == ["delivered", "suppressed"]
    assert len(receiver.on("/runs")) == 1


async def test_a_slot_another_alert_holds_is_not_given_back(monitor_redis_url):
    client = aioredis.from_url(monitor_redis_url)
    model = f"m{uuid.uuid4().hex[:8]}"
    gate = OncePerModel(client, 3600)
    drift = ALERT.model_copy(update={"rule": "drift", "action": "retrain", "model": model})
    try:
        assert await gate.admits(drift.model_copy(update={"id": "holder"}))
        await gate.release(drift.model_copy(update={"id": "late"}))
        assert await client.get(f"mlfleet:monitor:retrain:last:{model}") == b"holder"
        assert not await gate.admits(drift.model_copy(update={"id": "other"}))
    finally:
        await client.aclose()


async def test_a_run_cut_short_by_shutdown_before_reaching_the_pipeline_gives_its_slot_back(monitor_redis_url):
    """Shut down while waiting to retry a run request that was refused at connect: no run started, so the model's
    next drift alert (from this monitor once it is back, or from another replica) must not wait out the interval."""
    client = aioredis.from_url(monitor_redis_url)
    outcomes: list[str] = []
    model = f"m{uuid.uuid4().hex[:8]}"
    sinks = build_sinks(webhook_urls=[], retrain_url=f"http://127.0.0.1:{free_port()}/runs", pipeline=PipelineRef("p"),
                        monitor_url="http://monitor", retrain_gate=OncePerModel(client, 3600))
    dispatcher = SinkDispatcher(sinks, http=httpx.AsyncClient(timeout=5), retry=RetryPolicy(5, 30, 30), queue_size=10,
                                on_outcome=lambda sink, outcome: outcomes.append(outcome))
    try:
        dispatcher.start()
        dispatcher.submit(ALERT.model_copy(update={"rule": "drift", "action": "retrain", "model": model}))
        await until(lambda: outcomes == ["retried"])  # refused once, now waiting 30 s to retry
        assert await client.exists(f"mlfleet:monitor:retrain:last:{model}") == 1
        await dispatcher.stop()
        assert outcomes == ["retried", "dropped"]
        assert await client.exists(f"mlfleet:monitor:retrain:last:{model}") == 0
    finally:
        await dispatcher.stop()
        await client.aclose()


async def test_a_run_cut_short_by_shutdown_mid_request_keeps_its_slot(monitor_redis_url):
    """Shut down while the run request is with a pipeline that has not answered: the run may have started, so the
    slot stays held for its interval (a second run of the same drift is what the slot exists to prevent)."""
    client = aioredis.from_url(monitor_redis_url)
    received, finished = asyncio.Event(), asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        received.set()
        await finished.wait()  # no answer until the test is over
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    outcomes: list[str] = []
    model = f"m{uuid.uuid4().hex[:8]}"
    sinks = build_sinks(webhook_urls=[], retrain_url=f"http://127.0.0.1:{port}/runs", pipeline=PipelineRef("p"),
                        monitor_url="http://monitor", retrain_gate=OncePerModel(client, 3600))
    dispatcher = SinkDispatcher(sinks, http=httpx.AsyncClient(timeout=60), retry=RetryPolicy(1, 0.01, 0.01),
                                queue_size=10, on_outcome=lambda sink, outcome: outcomes.append(outcome))
    try:
        dispatcher.start()
        dispatcher.submit(ALERT.model_copy(update={"rule": "drift", "action": "retrain", "model": model, "id": "sent"}))
        await asyncio.wait_for(received.wait(), 5)
        await dispatcher.stop()
        assert outcomes == ["dropped"]
        assert await client.get(f"mlfleet:monitor:retrain:last:{model}") == b"sent"
    finally:
        await dispatcher.stop()
        finished.set()
        server.close()
        await server.wait_closed()
        await client.aclose()


async def test_a_run_whose_request_could_not_be_built_gives_its_slot_back(monitor_redis_url):
    client = aioredis.from_url(monitor_redis_url)
    outcomes: list[str] = []
    model = f"m{uuid.uuid4().hex[:8]}"

    def unusable(alert: AlertPublic) -> dict:
        raise ValueError("no body for this alert")

    sink = Sink("retrain", f"http://127.0.0.1:{free_port()}/runs", unusable, gate=OncePerModel(client, 3600))
    dispatcher = SinkDispatcher([sink], http=httpx.AsyncClient(timeout=5), retry=RetryPolicy(1, 0.01, 0.01),
                                queue_size=10, on_outcome=lambda sink, outcome: outcomes.append(outcome))
    try:
        dispatcher.start()
        dispatcher.submit(ALERT.model_copy(update={"rule": "drift", "action": "retrain", "model": model}))
        await until(lambda: outcomes == ["failed"])
        assert outcomes == ["failed"]

        async def slot_free() -> bool:
            return not await client.exists(f"mlfleet:monitor:retrain:last:{model}")

        await until(slot_free)
        assert await slot_free(), "nothing was sent, so no run started: the slot is given back"
    finally:
        await dispatcher.stop()
        await client.aclose()
