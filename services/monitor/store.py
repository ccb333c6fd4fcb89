"""Where the per-bucket aggregates live in Redis, and how they are written and read.

Keys (all expire ``ttl_s`` after their last write):

- ``mlfleet:monitor:agg:{model}:{version}:{bucket}`` — hash of counters (see :mod:`stats`);
  ``version`` is ``none`` for requests that failed before a version was chosen.
- ``mlfleet:monitor:models`` — set of models seen.
- ``mlfleet:monitor:versions:{model}`` — set of that model's versions seen.
- ``mlfleet:monitor:models:seen`` and ``mlfleet:monitor:versions:{model}:seen`` — hashes of the last bucket
  each model and version had events in. A model or version without events for ``ttl_s`` leaves its set when
  the set is next read (:meth:`AggregateStore.models`, :meth:`AggregateStore.versions`): those sets were renewed
  by any event of any member, so a model's retired versions stayed listed, and had their drift re-read every
  pass, for as long as the model had traffic. Its live stream expires as well (see :mod:`samples`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from services.monitor.stats import BUCKET_S, BucketKey

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


def seen_in(members_key: str) -> str:
    """The hash of each member's last bucket with events, beside the set ``members_key``."""
    return f"{members_key}:seen"


class AggregateStore:
    def __init__(self, redis: aioredis.Redis, *, ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._clock = clock

    def queue_counts(self, pipe: Pipeline, buckets: Mapping[BucketKey, Counter[str]]) -> None:
        """Queue the increments of ``buckets`` on ``pipe``; the caller owns the transaction."""
        models: dict[str, dict[str, int]] = {}
        """Model → version → the batch's latest bucket of it."""
        for (model, version, bucket), counters in buckets.items():
            key = aggregate_key(model, version, bucket)
            for field, amount in counters.items():
                if amount:
                    pipe.hincrby(key, field, amount)
            pipe.expire(key, self._ttl_s)
            versions = models.setdefault(model, {})
            segment = version_segment(version)
            versions[segment] = max(versions.get(segment, bucket), bucket)
        if not models:
            return
        pipe.sadd(MODELS_KEY, *models)
        pipe.hset(seen_in(MODELS_KEY), mapping={model: max(versions.values()) for model, versions in models.items()})
        for key in (MODELS_KEY, seen_in(MODELS_KEY)):
            pipe.expire(key, self._ttl_s)
        for model, versions in models.items():
            pipe.sadd(versions_key(model), *versions)
            pipe.hset(seen_in(versions_key(model)), mapping=versions)
            for key in (versions_key(model), seen_in(versions_key(model))):
                pipe.expire(key, self._ttl_s)

    async def models(self) -> list[str]:
        return sorted(m.decode() for m in await self._recent(MODELS_KEY))

    async def versions(self, model: str) -> list[int | None]:
        return sorted((parse_version(v) for v in await self._recent(versions_key(model))), key=version_order)

    async def _recent(self, members_key: str) -> list[bytes]:
        """The members of the set ``members_key`` with events within ``ttl_s``; the others are removed from it. A
        member its hash lacks (recorded before the hash existed) counts as seen now, and leaves once it is
        ``ttl_s`` without events."""
        now = int(self._clock() // BUCKET_S)
        oldest = now - self._ttl_s // BUCKET_S
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.smembers(members_key)
            pipe.hgetall(seen_in(members_key))
            members, seen = await pipe.execute()
        stale = [m for m in members if m in seen and int(seen[m]) < oldest]
        unseen = [m for m in members if m not in seen]
        if stale or unseen:
            async with self._redis.pipeline(transaction=True) as pipe:
                if stale:
                    pipe.srem(members_key, *stale)
                    pipe.hdel(seen_in(members_key), *stale)
                for member in unseen:
                    pipe.hsetnx(seen_in(members_key), member, now)
                pipe.expire(seen_in(members_key), self._ttl_s)
                await pipe.execute()
        return [m for m in members if m not in stale]

    async def read(self, model: str, version: int | None, buckets: range) -> list[dict[str, int]]:
        """The aggregates of ``buckets`` (empty ones included as ``{}``)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.hgetall(aggregate_key(model, version, bucket))
            replies = await pipe.execute()
        return [{k.decode(): int(v) for k, v in reply.items()} for reply in replies]
