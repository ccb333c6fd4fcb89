"""The monitor as a real process on a real Redis: exact counts, restarts, reclaim, bad input."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest
import redis

from mlfleet.runtime.processes import wait_until
from services.common.redis import PREDICTIONS_STREAM
from services.monitor.stats import SCORE_BINS
from tests.conftest import start_service
from tests.monitor.factories import mixed_events, publish

PROBLEM_JSON = "application/problem+json"


def get_stats(url: str) -> dict:
    return httpx.get(f"{url}/v1/stats", timeout=10).json()


def wait_for_events(url: str, processed: int, invalid: int = 0, *, timeout_s: float = 120) -> dict:
    """Wait until the group has counted at least ``processed`` events and nothing is pending."""
    def done() -> bool:
        stats = get_stats(url)
        return stats["events_processed"] >= processed and stats["events_invalid"] >= invalid and stats["pending"] == 0
    wait_until(done, timeout_s=timeout_s, interval_s=0.1, what=f"{processed} events counted")
    return get_stats(url)


def expected_by_version(events) -> dict[tuple[str, int | None], dict]:
    """What the monitor should report, computed straight from the events."""
    expected: dict[tuple[str, int | None], dict] = {}
    for e in events:
        row = expected.setdefault((e.model, e.version), {
            "requests": 0, "predictions": 0, "errors": 0, "errors_by_code": Counter(), "variants": Counter(),
            "scores": [0] * SCORE_BINS, "latencies": [],
        })
        row["requests"] += 1
        row["latencies"].append(e.latency_ms)
        if e.status == "ok":
            row["predictions"] += e.instances
        else:
            row["errors"] += 1
            row["errors_by_code"][e.error_code] += 1
        row["variants"][e.variant.value] += 1
        for score in e.scores:
            row["scores"][min(int(score * SCORE_BINS), SCORE_BINS - 1)] += 1
    return expected


def reported_by_version(url: str, models) -> dict[tuple[str, int | None], dict]:
    reported = {}
    for model in models:
        response = httpx.get(f"{url}/v1/models/{model}/metrics", params={"window_s": 900}, timeout=10)
        assert response.status_code == 200, response.text
        for version in response.json()["versions"]:
            reported[(model, version["version"])] = version
    return reported


def total_requests(url: str, models) -> int:
    return sum(v["requests"] for v in reported_by_version(url, models).values())


def test_counts_equal_exactly_what_was_sent(monitor, client, stream_client):
    events = mixed_events(600)
    publish(stream_client, PREDICTIONS_STREAM, events[:300])
    stream_client.xadd(PREDICTIONS_STREAM, {"event": b"{not json"})
    stream_client.xadd(PREDICTIONS_STREAM, {"something": b"else"})
    publish(stream_client, PREDICTIONS_STREAM, events[300:])

    stats = wait_for_events(monitor.url, 600, invalid=2)
    assert (stats["events_processed"], stats["events_invalid"], stats["pending"]) == (600, 2, 0)
    assert stats["processed_by_this_consumer"] == 600
    assert stats["stream_length"] == 602

    assert client.get("/v1/models").json() == {
        "data": [{"model": "churn", "versions": [3, 4]}, {"model": "fraud", "versions": [3, 4]}], "count": 2,
    }
    expected = expected_by_version(events)
    reported = reported_by_version(monitor.url, ["fraud", "churn"])
    assert set(reported) == set(expected)
    for key, want in expected.items():
        got = reported[key]
        counts = (got["requests"], got["predictions"], got["errors"])
        assert counts == (want["requests"], want["predictions"], want["errors"])
        assert got["error_rate"] == pytest.approx(want["errors"] / want["requests"])
        assert got["errors_by_code"] == dict(want["errors_by_code"])
        assert got["variants"] == dict(want["variants"])
        assert got["score_histogram"]["counts"] == want["scores"]
        latency = got["latency_ms"]
        assert latency["mean"] == pytest.approx(statistics.fmean(want["latencies"]))
        assert latency["p50"] == pytest.approx(statistics.median_low(want["latencies"]), rel=0.13)
        assert latency["p50"] <= latency["p95"] <= latency["p99"] <= max(want["latencies"]) * 1.13

    metrics = client.get("/metrics").text
    assert "mlfleet_monitor_events_invalid_total 2.0" in metrics
    processed = expected[("fraud", 3)]["requests"]
    assert f'mlfleet_monitor_events_processed_total{{model="fraud",version="3"}} {float(processed)}' in metrics
    assert "mlfleet_monitor_processing_lag_seconds" in metrics


def test_sigkill_mid_stream_then_restart_counts_every_event_once(run_monitor, stream_client):
    total = 20_000
    publish(stream_client, PREDICTIONS_STREAM, mixed_events(total))
    monitor = run_monitor(consumer_name="survivor", batch_size=50)
    totals_key = f"mlfleet:monitor:group:{PREDICTIONS_STREAM}:monitor"
    wait_until(lambda: int(stream_client.hget(totals_key, "processed") or 0) >= 2_000, timeout_s=120,
               interval_s=0.005, what="consumption under way")
    monitor.process.kill()
    monitor.process.wait()
    counted_at_kill = int(stream_client.hget(totals_key, "processed"))
    assert counted_at_kill < total, "the monitor finished before it was killed; the test proved nothing"

    restarted = run_monitor(consumer_name="survivor", batch_size=500)
    stats = wait_for_events(restarted.url, total)
    assert (stats["events_processed"], stats["pending"]) == (total, 0)
    assert total_requests(restarted.url, ["fraud", "churn"]) == total


def test_entries_pending_on_a_dead_consumer_are_reclaimed_and_counted_once(run_monitor, stream_client):
    stream_client.xgroup_create(PREDICTIONS_STREAM, "monitor", id="0", mkstream=True)
    publish(stream_client, PREDICTIONS_STREAM, mixed_events(150))
    taken = stream_client.xreadgroup("monitor", "dead-consumer", {PREDICTIONS_STREAM: ">"}, count=1000)
    assert len(taken[0][1]) == 150
    publish(stream_client, PREDICTIONS_STREAM, mixed_events(50))

    monitor = run_monitor(reclaim_idle_ms=300)
    stats = wait_for_events(monitor.url, 200)
    assert (stats["events_processed"], stats["events_invalid"], stats["pending"]) == (200, 0, 0)
    assert total_requests(monitor.url, ["fraud", "churn"]) == 200

    def dead_consumer_forgotten() -> bool:
        names = {c["name"] for c in stream_client.xinfo_consumers(PREDICTIONS_STREAM, "monitor")}
        return b"dead-consumer" not in names
    wait_until(dead_consumer_forgotten, timeout_s=30, what="dead consumer removed")
    assert get_stats(monitor.url)["events_processed"] == 200


QUERIED_DB = 14
"""The read-only tests' monitor has a Redis database of its own: the other tests empty the monitor's between them."""


@pytest.fixture(scope="module")
def queried(redis_url, workdir) -> Iterator[httpx.Client]:
    """A client of one monitor, started once for the module's read-only tests, which has counted two events (of
    models ``fraud`` and ``churn``)."""
    url = urlparse(redis_url)._replace(path=f"/{QUERIED_DB}").geturl()
    with redis.Redis.from_url(url) as stream:
        stream.flushdb()
    monitor = start_service("monitor", {"redis_url": url, "block_ms": 200}, workdir / "monitor-queried")
    try:
        with redis.Redis.from_url(url) as stream:
            publish(stream, PREDICTIONS_STREAM, mixed_events(2))
        with httpx.Client(base_url=monitor.url, timeout=10) as http:
            wait_until(lambda: http.get("/v1/models").json()["count"] == 2, timeout_s=30, what="models seen")
            yield http
    finally:
        monitor.stop()


def test_unknown_model_is_a_404_problem(queried):
    response = queried.get("/v1/models/nosuchmodel/metrics")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert (body["status"], body["code"], body["model"]) == (404, "model-not-found", "nosuchmodel")


@pytest.mark.parametrize("params", [
    {"window_s": 0}, {"window_s": -10}, {"window_s": "abc"}, {"window_s": 7 * 24 * 3600 + 1},
    {"start": 100}, {"end": 100}, {"start": 200, "end": 100}, {"window_s": 60, "start": 1, "end": 2},
    {"start": 0, "end": 8 * 24 * 3600}, {"window_s": "inf"},
])
def test_bad_windows_are_422_problems(queried, params):
    response = queried.get("/v1/models/fraud/metrics", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["code"] == "invalid-input"


def test_a_malformed_model_name_is_a_422_problem(queried):
    response = queried.get("/v1/models/Not%20A%20Model/metrics")
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
