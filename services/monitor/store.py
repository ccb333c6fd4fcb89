"""Where the per-bucket aggregates live in Redis, and how they are written and read.

Keys (all expire ``ttl_s`` after their last write):

- ``mlfleet:monitor:agg:{model}:{version}:{bucket}`` — hash of counters (see :mod:`stats`);
  ``version`` is ``none`` for requests that failed before a version was chosen.
- ``mlfleet:monitor:models`` — set of models seen.
- ``mlfleet:monitor:versions:{model}`` — set of that model's versions seen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from services.monitor.stats import BucketKey

PREFIX = "mlfleet:monitor"
MODELS_KEY = f"{PREFIX}:models"
NO_VERSION = "none"


def version_segment(version: int | None) -> str:
    return NO_VERSION if version is None else str(version)


def parse_version(segment: bytes | str) -> int | None:
    text = segment.decode() if isinstance(segment, bytes) else segment
    return None if text == NO_VERSION else int(text)


def version_order(version: int | None) -> tuple[bool, int]:
    """Numeric order, the unknown version last."""
    return (version is None, version or 0)


def aggregate_key(model: str, version: int | None, bucket: int) -> str:
    return f"{PREFIX}:agg:{model}:{version_segment(version)}:{bucket}"


def versions_key(model: str) -> str:
    return f"{PREFIX}:versions:{model}"


class AggregateStore:
    def __init__(self, redis: aioredis.Redis, *, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    def queue_counts(self, pipe: Pipeline, buckets: Mapping[BucketKey, Counter[str]]) -> None:
        """Queue the increments of ``buckets`` on ``pipe``; the caller owns the transaction."""
        models: dict[str, set[str]] = {}
        for (model, version, bucket), counters in buckets.items():
            key = aggregate_key(model, version, bucket)
            for field, amount in counters.items():
                if amount:
                    pipe.hincrby(key, field, amount)
            pipe.expire(key, self._ttl_s)
            models.setdefault(model, set()).add(version_segment(version))
        if not models:
            return
        pipe.sadd(MODELS_KEY, *models)
        pipe.expire(MODELS_KEY, self._ttl_s)
        for model, versions in models.items():
            pipe.sadd(versions_key(model), *versions)
            pipe.expire(versions_key(model), self._ttl_s)

    async def models(self) -> list[str]:
        return sorted(m.decode() for m in await self._redis.smembers(MODELS_KEY))

    async def versions(self, model: str) -> list[int | None]:
        return sorted((parse_version(v) for v in await self._redis.smembers(versions_key(model))), key=version_order)

    async def read(self, model: str, version: int | None, buckets: range) -> list[dict[str, int]]:
        """The aggregates of ``buckets`` (empty ones included as ``{}``)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.hgetall(aggregate_key(model, version, bucket))
            replies = await pipe.execute()
        return [{k.decode(): int(v) for k, v in reply.items()} for reply in replies]
