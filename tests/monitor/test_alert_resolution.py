"""Alerts resolve: once a check finds the rule no longer broken the alert is resolved once, sent as `resolved` with the
incident's start and end, and a new breach pages at once (real Redis; a real monitor and webhook receiver)."""

from __future__ import annotations



import httpx
import pytest
import redis.asyncio as aioredis

from mlfleet.runtime.processes import wait_until
from services.common.redis import PREDICTIONS_STREAM
from services.monitor.alerts import AlertCenter, AlertRules, _alert, fingerprint, judged_fingerprints
from services.monitor.schemas import Quality
from services.monitor.stats import summarize
from services.monitor.sinks import ZERO_TIME, PipelineRef, alertmanager_body, build_sinks, rfc3339
from tests.monitor.factories import make_event, publish


@pytest.fixture
async def redis_client(monitor_redis_url, stream_client):
    client = aioredis.from_url(monitor_redis_url)
    yield client
    await client.aclose()


def breach(model: str, now: float):
    return _alert("error_rate", "critical", model, 3, f"{model} v3 errs", "too many errors", now=now)


def center(redis_client, sent: list, *, resolve_after_s: float = 0.0) -> AlertCenter:
    return AlertCenter(redis_client, cooldown_s=900, history_max=50, dispatch=sent.append, on_fired=lambda a, f: None,
                       resolve_after_s=resolve_after_s)


async def test_an_incident_fires_reminds_with_its_start_resolves_once_and_a_new_breach_pages_at_once(redis_client):
    sent: list = []
    replica, other_replica = center(redis_client, sent), center(redis_client, sent)
    first = breach("m", now=1000.0)
    assert await replica.fire(first)
    assert not await other_replica.fire(breach("m", now=1010.0)), "one incident pages once, from any replica"
    assert await replica.resolve_cleared(lambda a: a.model == "other", now=1020.0) == []
    assert await replica.resolve_cleared(lambda a: a.model == "m", now=990.0) == [], \
        "a check older than the incident (another replica's slower pass) cannot resolve it"

    both = [await r.resolve_cleared(lambda a: a.model == "m", now=1030.0) for r in (replica, other_replica)]
    resolved = both[0] + both[1]
    assert len(resolved) == 1, "resolved once across replicas"
    assert (resolved[0].status, resolved[0].started_at, resolved[0].resolved_at) == ("resolved", 1000.0, 1030.0)
    assert [a.status for a in sent] == ["firing", "resolved"]

    again = breach("m", now=1040.0)
    assert await replica.fire(again), "the cooldown went with the incident"
    assert sent[-1].started_at == 1040.0
    history = await replica.history(model="m")
    assert [(a.status, a.fired_at) for a in history] == [("firing", 1040.0), ("resolved", 1000.0), ("firing", 1000.0)]


async def test_an_alert_resolves_only_after_its_rule_stays_clear_for_the_hold_and_a_breach_restarts_it(redis_client):
    sent: list = []
    replica, other_replica = (center(redis_client, sent, resolve_after_s=60) for _ in range(2))
    assert await replica.fire(breach("h", now=1000.0))
    assert await replica.resolve_cleared(lambda a: a.model == "h", now=1010.0) == [], "the first clear check holds"
    assert await other_replica.resolve_cleared(lambda a: a.model == "h", now=1060.0) == [], "50 s clear of 60"
    assert not await other_replica.fire(breach("h", now=1065.0)), "a breach while clearing is the same incident"
    assert await replica.resolve_cleared(lambda a: a.model == "h", now=1080.0) == [], "the breach restarted the hold"
    assert await replica.resolve_cleared(lambda a: a.model == "h", now=1130.0) == []
    resolved = await other_replica.resolve_cleared(lambda a: a.model == "h", now=1140.0)
    assert [(a.status, a.started_at, a.resolved_at) for a in resolved] == [("resolved", 1000.0, 1140.0)]
    assert [a.status for a in sent] == ["firing", "resolved"], "one page and one resolution across the flapping"
    assert await replica.active(model="h") == []

    assert await replica.fire(breach("h", now=1150.0)), "resolved: a new breach pages at once"
    assert await replica.fire(breach("other", now=1155.0))
    assert [(a.model, a.started_at) for a in await replica.active()] == [("other", 1155.0), ("h", 1150.0)]
    assert [a.model for a in await replica.active(model="h")] == ["h"]
    assert await replica.resolve_cleared(lambda a: a.model == "h", now=1160.0) == [], "and holds afresh"
    gone = await replica.resolve_gone(lambda a: a.model == "h", now=1161.0)
    assert [a.resolved_at for a in gone] == [1161.0], "a version no longer listed resolves at once"


async def test_an_incident_paged_before_alerts_resolved_is_adopted_and_resolves(redis_client):
    """The previous release left a cooldown and no active entry: the breach was silenced and never resolved."""
    sent: list = []
    alerts = center(redis_client, sent)
    old = breach("m", now=1000.0)
    await redis_client.set(alerts._cooldown_key(old.fingerprint), "paged-by-the-previous-release", px=900_000)
    assert not await alerts.fire(breach("m", now=1010.0)), "still within the old page's cooldown"
    assert [a.status for a in await alerts.resolve_cleared(lambda a: True, now=1020.0)] == ["resolved"]
    assert await alerts.fire(breach("m", now=1030.0)), "a new breach pages at once"


def test_a_rule_too_thin_to_judge_neither_breaks_nor_clears():
    """Labels hovering around `min_labelled`: below it the accuracy rule is not judged, so its alert stays active
    instead of resolving and firing (and starting a retraining run) by turns."""
    rules = AlertRules(min_labelled=50, min_requests=10)
    thin = summarize(3, {"requests": 5, "errors": 0})
    thin.quality = Quality(labelled=45, accuracy=0.7, precision=0.5, recall=0.5, f1=0.5, roc_auc=None)
    assert judged_fingerprints("m", thin, rules) == set()
    idle = summarize(3, {"requests": 0, "errors": 0})
    assert judged_fingerprints("m", idle, rules) == {fingerprint(rule, "m", 3, action) for rule, action in
                                                     (("accuracy", "retrain"), ("error_rate", None), ("latency", None))}


def test_a_resolution_reads_as_alertmanagers_and_starts_no_retraining():
    firing = breach("m", now=1000.0).model_copy(update={"started_at": 900.0})
    resolved = firing.model_copy(update={"status": "resolved", "resolved_at": 1100.0})
    body = alertmanager_body(resolved, monitor_url="http://monitor")
    assert (body["status"], body["alerts"][0]["status"]) == ("resolved", "resolved")
    assert (body["alerts"][0]["startsAt"], body["alerts"][0]["endsAt"]) == (rfc3339(900.0), rfc3339(1100.0))
    assert alertmanager_body(firing, monitor_url="http://monitor")["alerts"][0]["endsAt"] == ZERO_TIME
    retrain = next(s for s in build_sinks(webhook_urls=[], retrain_url="http://kfp", pipeline=PipelineRef("p"),
                                          monitor_url="http://monitor") if s.name == "retrain")
    drift = _alert("drift", "warning", "m", 3, "drift", "moved", now=1000.0, action="retrain")
    assert retrain.accepts(drift) and not retrain.accepts(drift.model_copy(update={"status": "resolved"}))


def test_an_error_rate_alert_resolves_when_the_errors_are_diluted(run_monitor, stream_client, receiver):
    monitor = run_monitor(alert_interval_s=0.2, alert_resolve_after_s=0.5, alert_webhook_urls=receiver.url("/alerts"),
                          alert_rules='{"min_requests": 10, "max_error_rate": 0.05}')
    publish(stream_client, PREDICTIONS_STREAM, [make_event("fraud", 3, status="error", error_code="backend")
                                                for _ in range(20)])
    wait_until(lambda: receiver.on("/alerts"), timeout_s=30, what="the error-rate page")
    page = receiver.on("/alerts")[0]
    assert (page["status"], page["alerts"][0]["labels"]["rule"]) == ("firing", "error_rate")
    publish(stream_client, PREDICTIONS_STREAM, [make_event("fraud", 3) for _ in range(1000)])  # 20 in 1020: 2 %
    wait_until(lambda: len(receiver.on("/alerts")) >= 2, timeout_s=30, what="the resolution")
    resolution = receiver.on("/alerts")[1]["alerts"][0]
    assert resolution["status"] == "resolved" and resolution["startsAt"] == page["alerts"][0]["startsAt"]
    assert resolution["endsAt"] != ZERO_TIME and resolution["fingerprint"] == page["alerts"][0]["fingerprint"]
    with httpx.Client(base_url=monitor.url, timeout=10) as client:
        history = client.get("/v1/alerts", params={"rule": "error_rate"}).json()["data"]
        assert [a["status"] for a in history] == ["resolved", "firing"]
        assert client.get("/v1/alerts", params={"active": "true"}).json() == {"data": [], "count": 0}
        assert 'mlfleet_monitor_alerts_total{outcome="resolved",rule="error_rate",severity="critical"} 1.0' in \
            client.get("/metrics").text
