"""Metric alert rules against a real monitor, with a webhook receiver that is down, then up."""

from __future__ import annotations

import re

import httpx

from mlfleet.runtime.processes import free_port, wait_until
from services.common.redis import PREDICTIONS_STREAM
from tests.monitor.factories import make_event, publish
from tests.monitor.receiver import Receiver


def counter(text: str, name: str, **labels: str) -> float:
    pattern = name + r"\{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + r"\} (\S+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def test_a_down_receiver_neither_stops_monitoring_nor_loses_the_alert(run_monitor, stream_client):
    port = free_port()
    monitor = run_monitor(
        alert_webhook_urls=f"http://127.0.0.1:{port}/hook", alert_interval_s=0.2,
        alert_rules='{"min_requests": 20, "max_error_rate": 0.1, "max_p99_ms": 100}',
        sink_retry_initial_s=0.2, sink_retry_max_s=0.5, sink_max_attempts=200,
    )
    failing = [make_event("fraud", 3, status="error", error_code="timeout") if i % 2 else make_event("fraud", 3)
               for i in range(40)]
    slow = [make_event("fraud", 4, latency_ms=400.0) for _ in range(40)]
    publish(stream_client, PREDICTIONS_STREAM, failing + slow)
    client = httpx.Client(base_url=monitor.url, timeout=10)

    def rules_fired() -> set[tuple[str, int]]:
        return {(a["rule"], a["version"]) for a in client.get("/v1/alerts").json()["data"]}
    wait_until(lambda: rules_fired() == {("error_rate", 3), ("latency", 4)}, timeout_s=30, what="rule alerts")
    alerts = {a["rule"]: a for a in client.get("/v1/alerts", params={"model": "fraud"}).json()["data"]}
    assert (alerts["error_rate"]["severity"], alerts["error_rate"]["values"]["error_rate"]) == ("critical", 0.5)
    assert alerts["latency"]["severity"] == "warning" and alerts["latency"]["values"]["p99_ms"] > 100

    wait_until(lambda: counter(client.get("/metrics").text, "mlfleet_monitor_alert_deliveries_total",
                               outcome="retried", sink="webhook-0") >= 2, timeout_s=30, what="retries")
    more = [make_event("fraud", 3) for _ in range(100)]
    publish(stream_client, PREDICTIONS_STREAM, more)
    wait_until(lambda: client.get("/v1/stats").json()["events_processed"] == 180, timeout_s=30,
               what="events counted while the receiver is down")
    assert client.get("/v1/models/fraud/metrics").json()["versions"][0]["requests"] == 140

    receiver = Receiver(port)
    try:
        wait_until(lambda: len(receiver.on("/hook")) == 2, timeout_s=30, what="alerts delivered once the receiver is up")
        names = sorted(body["alerts"][0]["labels"]["alertname"] for body in receiver.on("/hook"))
        assert names == ["MlfleetErrorRate", "MlfleetLatency"]
    finally:
        receiver.stop()
    text = client.get("/metrics").text
    assert counter(text, "mlfleet_monitor_alert_deliveries_total", outcome="delivered", sink="webhook-0") == 2
    assert counter(text, "mlfleet_monitor_alerts_total", outcome="suppressed", rule="latency", severity="warning") >= 1
    assert client.get("/v1/alerts").json()["count"] == 2, "a breach that goes on fires once per cooldown"
    client.close()

