"""The alert center's cooldown and history against a real Redis."""

from __future__ import annotations

import time
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from services.monitor.alerts import HISTORY_KEY, AlertCenter, _alert


@pytest.fixture
async def redis_client(monitor_redis_url):
    client = aioredis.from_url(monitor_redis_url)
    yield client
    await client.aclose()


def breach(model: str):
    return _alert("error_rate", "critical", model, 3, f"{model} v3 errs", "too many errors", now=time.time())


async def test_an_alert_whose_history_entry_failed_is_not_silenced_by_its_cooldown(redis_client):
    fired: list[tuple[str, bool]] = []
    sent: list[str] = []
    center = AlertCenter(redis_client, cooldown_s=900, history_max=10, dispatch=lambda a: sent.append(a.id),
                         on_fired=lambda a, fresh: fired.append((a.id, fresh)))
    model = f"alerts-{uuid.uuid4().hex[:8]}"
    saved = f"{HISTORY_KEY}:saved-{model}"
    had_history = await redis_client.exists(HISTORY_KEY)
    if had_history:
        await redis_client.rename(HISTORY_KEY, saved)
    try:
        await redis_client.set(HISTORY_KEY, "not a list")  # the history refuses the entry
        first = breach(model)
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await center.fire(first)
        assert sent == [] and fired == []
        await redis_client.delete(HISTORY_KEY)

        again = breach(model)
        assert await center.fire(again), "the failed alert left no cooldown behind"
        assert sent == [again.id] and fired == [(again.id, True)]
        assert [a.id for a in await center.history(model=model)] == [again.id]
        assert not await center.fire(breach(model)), "the recorded one cools down"
        assert fired[-1][1] is False and len(sent) == 1
    finally:
        await redis_client.delete(HISTORY_KEY)
        if had_history:
            await redis_client.rename(saved, HISTORY_KEY)
