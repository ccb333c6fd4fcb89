"""Which models and versions the monitor lists (and watches): those with events within the retention."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
import redis.asyncio as aioredis

from services.monitor.stats import BUCKET_S, BucketKey
from services.monitor.store import MODELS_KEY, AggregateStore, versions_key

DAY = 24 * 3600
NOW = time.time()
"""The real time: the models' set is shared with the suite's other monitors, whose members a clock far off would
judge retired (and remove)."""


@pytest.fixture
async def redis_client(monitor_redis_url):
    client = aioredis.from_url(monitor_redis_url)
    yield client
    await client.aclose()


async def count(store: AggregateStore, client: aioredis.Redis, model: str, version: int, at: float) -> None:
    async with client.pipeline(transaction=True) as pipe:
        store.queue_counts(pipe, {BucketKey(model, version, int(at // BUCKET_S)): Counter(requests=1)})
        await pipe.execute()


async def test_a_version_without_events_for_the_retention_is_no_longer_listed(redis_client):
    model = f"store-{uuid.uuid4().hex[:8]}"
    store = AggregateStore(redis_client, ttl_s=7 * DAY, clock=lambda: NOW)
    await count(store, redis_client, model, 1, NOW - 8 * DAY)  # retired more than a week ago
    await count(store, redis_client, model, 2, NOW - DAY)
    await count(store, redis_client, model, 3, NOW)
    assert await store.versions(model) == [2, 3]
    assert not await redis_client.sismember(versions_key(model), "1"), "dropped from the set, not only hidden"
    assert model in await store.models()


async def test_a_model_without_events_for_the_retention_is_no_longer_listed(redis_client):
    gone, live = (f"store-{uuid.uuid4().hex[:8]}" for _ in range(2))
    store = AggregateStore(redis_client, ttl_s=7 * DAY, clock=lambda: NOW)
    await count(store, redis_client, gone, 1, NOW - 30 * DAY)
    await count(store, redis_client, live, 1, NOW)
    listed = await store.models()
    assert live in listed and gone not in listed


async def test_members_recorded_before_their_last_seen_times_were_kept_leave_after_the_retention(redis_client):
    """Sets written by an earlier monitor have no times: each member counts as seen at the first read."""
    model = f"store-{uuid.uuid4().hex[:8]}"
    await redis_client.sadd(versions_key(model), "4")
    await redis_client.sadd(MODELS_KEY, model)
    first = AggregateStore(redis_client, ttl_s=7 * DAY, clock=lambda: NOW)
    assert await first.versions(model) == [4]
    later = AggregateStore(redis_client, ttl_s=7 * DAY, clock=lambda: NOW + 8 * DAY)
    assert await later.versions(model) == []
