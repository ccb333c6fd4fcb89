"""Live samples under a rate budget: the budget's arithmetic, and what one batch's script call leaves in a real Redis."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from mlfleet.runtime.processes import wait_until
from services.common.redis import PREDICTIONS_STREAM
from services.monitor.samples import (
    SAMPLE_FIELD,
    SampleBudget,
    SampleStore,
    live_key,
    prediction_key,
    record_field,
    seen_key,
)
from tests.monitor.factories import make_event, publish


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_budget_grants_a_burst_then_refills_at_its_rate_per_stream():
    clock = Clock()
    budget = SampleBudget(rate_per_s=100, burst=50, clock=clock)
    assert budget.take("a", 30) == 30
    assert budget.take("a", 30) == 20, "the burst is spent"
    assert budget.take("a", 5) == 0
    assert budget.take("b", 40) == 40, "another version's stream has its own budget"
    clock.now += 0.25
    assert budget.take("a", 100) == 25
    clock.now += 60
    assert budget.take("a", 100) == 50, "idle time refills up to the burst, no further"


def test_buckets_that_refilled_are_forgotten_once_there_are_many():
    clock = Clock()
    budget = SampleBudget(rate_per_s=1, burst=10, clock=clock, prune_above=2)
    assert budget.take("retired", 1) == 1
    assert budget.take("busy", 10) == 10
    clock.now += 2  # "retired" is full again, "busy" holds 2 tokens
    assert budget.take("new", 3) == 3
    assert budget.tracked == 2, "the full bucket was dropped, the others kept"
    assert budget.take("busy", 10) == 2, "a kept bucket keeps its state"
    assert budget.take("retired", 20) == 10, "a dropped one starts full, as it would have been"


def test_a_budget_of_zero_grants_every_event():
    budget = SampleBudget(rate_per_s=0, burst=10, clock=Clock())
    assert [budget.take("a", 1000) for _ in range(3)] == [1000, 1000, 1000]


@pytest.fixture
async def redis_client(monitor_redis_url):
    client = aioredis.from_url(monitor_redis_url)
    yield client
    await client.aclose()


async def record(store: SampleStore, client: aioredis.Redis, events) -> dict[str, int]:
    async with client.pipeline(transaction=True) as pipe:
        skipped = store.queue_events(pipe, events)
        await pipe.execute()
    return dict(skipped)


async def test_events_beyond_the_budget_keep_their_records_but_not_their_samples(redis_client):
    model = f"budget-{uuid.uuid4().hex[:8]}"
    store = SampleStore(redis_client, samples_max=40, prediction_ttl_s=600, seen_ttl_s=3600, samples_per_s=1e-6,
                        samples_ttl_s=900)
    stable = [make_event(model, 1, scores=[i / 100]) for i in range(100)]
    canary = [make_event(model, 2, scores=[0.9]) for _ in range(10)]
    failed = make_event(model, 1, status="error", error_code="timeout")

    skipped = await record(store, redis_client, [*stable, *canary, failed])

    assert skipped == {model: 60}
    entries = await redis_client.xrange(live_key(model, 1))
    sampled = [orjson.loads(fields[SAMPLE_FIELD])["r"] for _, fields in entries]
    order = [e.request_id for e in stable]
    assert len(sampled) == 40 and len(set(sampled)) == 40
    assert sampled == sorted(sampled, key=order.index), "a sample keeps its arrival order"
    assert await redis_client.xlen(live_key(model, 2)) == 10
    assert 0 < await redis_client.ttl(live_key(model, 1)) <= 900, "a retired version's stream expires"
    for event in [*stable, *canary]:
        assert await redis_client.hexists(prediction_key(event.request_id), record_field(event.model, event.version))
        assert 0 < await redis_client.ttl(prediction_key(event.request_id)) <= 600
        assert 600 < await redis_client.ttl(seen_key(event.request_id)) <= 3600
    assert not await redis_client.exists(prediction_key(failed.request_id))

    window = await store.window(model, 1)
    assert window.request_ids == sampled and window.size == 40

    assert await record(store, redis_client, stable[:5]) == {model: 5}, "the budget is spent for now"
    assert await redis_client.xlen(live_key(model, 1)) == 40


async def test_without_a_budget_every_successful_event_is_sampled(redis_client):
    model = f"budget-{uuid.uuid4().hex[:8]}"
    store = SampleStore(redis_client, samples_max=1000, prediction_ttl_s=600, seen_ttl_s=3600)
    events = [make_event(model, 3, scores=[0.2, 0.7]) for _ in range(300)]
    assert await record(store, redis_client, events) == {}
    window = await store.window(model, 3)
    assert window.request_ids == [r for e in events for r in [e.request_id] * 2]
    assert await record(store, redis_client, [make_event(model, 3, status="error", error_code="x")]) == {}


def metric(url: str, name: str, model: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(f'{name}{{') and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_monitor_over_its_rate_counts_every_event_and_reports_what_it_left_out(run_monitor, stream_client):
    monitor = run_monitor(samples_max=10, samples_per_s=0.001)
    model = "sampled"
    events = [make_event(model, 1) for _ in range(50)]
    publish(stream_client, PREDICTIONS_STREAM, events)
    wait_until(lambda: metric(monitor.url, "mlfleet_monitor_events_processed_total", model) == 50, timeout_s=30,
               what="the monitor counted every event")
    assert metric(monitor.url, "mlfleet_monitor_samples_skipped_total", model) == 40
    assert stream_client.xlen(live_key(model, 1)) == 10
    assert all(stream_client.exists(prediction_key(e.request_id)) for e in events), "every prediction is joinable"
