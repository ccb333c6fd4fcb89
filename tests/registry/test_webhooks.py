"""Rollout webhooks: Alertmanager/Flagger-shaped bodies, delivered in the background with retries."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter

from services.registry.settings import RegistrySettings
from services.registry.webhooks import RolloutEvent, RolloutNotice, WebhookNotifier, webhook_body
from tests.registry.harness import dead_address
from tests.rollouts.conftest import WebhookReceiver


def notice(event: RolloutEvent = RolloutEvent.rolled_back) -> RolloutNotice:
    return RolloutNotice(event=event, model="fraud", rollout_id=7, candidate=4, baseline=3, canary_percent=25,
                         actor="controller", reason="canary error rate 12.00% vs stable 0.00%",
                         started_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))


def deliveries() -> Counter:
    return Counter("deliveries", "test", ["outcome"], registry=CollectorRegistry())


async def until_counted(counter: Counter, outcome: str, n: int) -> None:
    """Until ``counter`` has counted ``n`` deliveries of ``outcome`` (10 s at most)."""
    async with asyncio.timeout(10):
        while counter.labels(outcome=outcome)._value.get() < n:
            await asyncio.sleep(0.02)


def test_the_body_reads_as_alertmanager_and_flagger():
    body = webhook_body(notice(), external_url="http://registry:8081")
    assert (body["version"], body["status"], body["receiver"]) == ("4", "firing", "mlfleet")
    alert = body["alerts"][0]
    assert alert["labels"] == {"alertname": "MlfleetRollout", "model": "fraud", "rollout_id": "7", "candidate": "4",
                               "baseline": "3", "event": "rolled_back", "severity": "critical"}
    assert alert["annotations"]["description"] == "canary error rate 12.00% vs stable 0.00%"
    assert alert["startsAt"] == "2026-01-02T03:04:05Z" and alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["generatorURL"] == "http://registry:8081/v1/models/fraud/rollouts/7"
    assert (body["name"], body["namespace"], body["phase"]) == ("fraud-v4", "fraud", "Failed")
    assert body["metadata"]["event_type"] == "rolled_back" and body["metadata"]["canary_percent"] == "25"
    promoted = webhook_body(notice(RolloutEvent.promoted))
    assert (promoted["status"], promoted["phase"]) == ("resolved", "Succeeded")
    assert promoted["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"


def test_links_start_at_the_registry_public_url():
    assert RegistrySettings(public_url="https://ml.example.test/registry/").registry_url() == \
        "https://ml.example.test/registry"
    assert RegistrySettings(host="10.0.0.5", port=9001).registry_url() == "http://10.0.0.5:9001"


async def test_failed_posts_are_retried_with_backoff_until_delivered():
    receiver = WebhookReceiver(fail_first=2)
    counter = deliveries()
    notifier = WebhookNotifier([receiver.url], timeout_s=2, max_attempts=4, backoff_s=0.1, deliveries=counter)
    notifier.start()
    try:
        started = time.monotonic()
        notifier.notify(notice())
        assert time.monotonic() - started < 0.01, "notify must not wait for the delivery"
        await until_counted(counter, "delivered", 1)  # the receiver has the body a moment before the notifier reads its answer
        assert time.monotonic() - started >= 0.3, "two retries wait 0.1 s then 0.2 s"
        assert receiver.attempts == 3 and receiver.bodies[0]["metadata"]["rollout_id"] == "7"
        assert counter.labels(outcome="retried")._value.get() == 2
        assert counter.labels(outcome="delivered")._value.get() == 1
    finally:
        await notifier.close()
        receiver.close()


async def test_an_unreachable_receiver_gives_up_after_the_last_attempt():
    counter = deliveries()
    notifier = WebhookNotifier([f"http://{dead_address()}/hook"], timeout_s=1, max_attempts=2, backoff_s=0.05,
                               deliveries=counter)
    notifier.start()
    try:
        notifier.notify(notice())
        await until_counted(counter, "failed", 1)
        assert counter.labels(outcome="retried")._value.get() == 1
    finally:
        await notifier.close()


async def test_a_urls_events_arrive_in_order_even_when_the_first_needs_a_retry():
    """`advanced` failing once, then `promoted`: delivered side by side, `promoted` arrived first and the retried
    `advanced` after it, re-opening an alert the receiver had just resolved."""
    receiver = WebhookReceiver(fail_first=1)
    counter = deliveries()
    notifier = WebhookNotifier([receiver.url], timeout_s=2, max_attempts=3, backoff_s=0.2, deliveries=counter)
    notifier.start()
    try:
        notifier.notify(notice(RolloutEvent.advanced))
        notifier.notify(notice(RolloutEvent.promoted))
        await until_counted(counter, "delivered", 2)
        assert receiver.events("fraud") == ["advanced", "promoted"]
    finally:
        await notifier.close()
        receiver.close()


async def test_events_left_undelivered_at_shutdown_are_counted_as_dropped():
    counter = deliveries()
    notifier = WebhookNotifier([f"http://{dead_address()}/hook"], timeout_s=1, max_attempts=5, backoff_s=10,
                               deliveries=counter)
    notifier.start()
    for _ in range(3):
        notifier.notify(notice())
    await until_counted(counter, "retried", 1)  # the first one failed once and waits to be retried
    await notifier.close()
    assert counter.labels(outcome="dropped")._value.get() == 3
