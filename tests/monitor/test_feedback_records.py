"""Feedback joins prediction records written before the model was in their field (real Redis, in process)."""

from __future__ import annotations

import time
import uuid

import orjson
import redis.asyncio as aioredis

from services.common.request_ids import new_request_id
from services.monitor.feedback import FeedbackStore, applied_key
from services.monitor.samples import prediction_key, record_field
from services.monitor.schemas import FeedbackItem
from services.monitor.stats import BUCKET_S
from services.monitor.store import MODELS_KEY


async def test_a_record_of_the_previous_layout_still_joins(monitor_redis_url):
    """The previous release wrote ``version → record``; such records are kept for ``prediction_ttl_s`` after an
    upgrade, and their labels must still count."""
    client = aioredis.from_url(monitor_redis_url)
    try:
        request_id = uuid.uuid4().hex
        record = {"m": "fraud", "t": time.time(), "s": [0.9], "l": [1], "p": 1}
        await client.hset(prediction_key(request_id), "3", orjson.dumps(record))
        await client.sadd(MODELS_KEY, "fraud")  # the monitor has seen the model's events
        store = FeedbackStore(client, prediction_ttl_s=600, seen_ttl_s=3600, bucket_ttl_s=3600)

        report = await store.submit([FeedbackItem(request_id=request_id, label=1, model="fraud")], now=time.time())

        assert [(r.outcome, r.versions) for r in report.results] == [("accepted", [3])]
        bucket = int(time.time() // BUCKET_S)
        assert await store.rows("fraud", 3, range(bucket - 1, bucket + 1)) == [(0.9, 1, 1)]
    finally:
        await client.aclose()


async def test_a_label_the_previous_release_applied_is_a_duplicate(monitor_redis_url):
    """Its marker had no model in it and stood for every model: sending the label again must not count it twice."""
    client = aioredis.from_url(monitor_redis_url)
    try:
        request_id = uuid.uuid4().hex
        record = {"m": "fraud", "t": time.time(), "s": [0.9], "l": [1], "p": 1}
        await client.hset(prediction_key(request_id), record_field("fraud", 3), orjson.dumps(record))
        await client.set(applied_key(request_id, 0), "1", ex=600)
        await client.sadd(MODELS_KEY, "fraud")  # the monitor has seen the model's events
        store = FeedbackStore(client, prediction_ttl_s=600, seen_ttl_s=3600, bucket_ttl_s=3600)

        for model in ("fraud", None):
            report = await store.submit([FeedbackItem(request_id=request_id, label=1, model=model)], now=time.time())
            assert [(r.outcome, r.versions) for r in report.results] == [("duplicate", [])]
    finally:
        await client.aclose()


async def test_a_label_naming_a_model_the_monitor_never_saw_is_unknown_at_once(monitor_redis_url):
    """A mistyped name: ``pending`` would have the client send it again for 10 s, in vain."""
    client = aioredis.from_url(monitor_redis_url)
    try:
        store = FeedbackStore(client, prediction_ttl_s=600, seen_ttl_s=3600, bucket_ttl_s=3600)
        fresh = new_request_id()
        report = await store.submit([FeedbackItem(request_id=fresh, label=1, model=f"never-{uuid.uuid4().hex[:8]}"),
                                     FeedbackItem(request_id=fresh, label=1)], now=time.time())
        assert [r.outcome for r in report.results] == ["unknown", "pending"]
    finally:
        await client.aclose()
