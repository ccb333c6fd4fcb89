"""Announce traffic-policy changes on Redis pub/sub; gateways reload their routing table on it.

Publishing is best effort: the change is already persisted, and gateways poll
``/v1/routes`` to repair any message they miss, so a failed publish is logged and counted.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from services.common.redis import POLICY_CHANNEL
from services.common.schemas import PolicyChanged

logger = logging.getLogger("mlfleet.registry.publisher")


class PolicyPublisher:
    def __init__(self, redis: aioredis.Redis, *, publishes: Counter) -> None:
        self._redis = redis
        self._publishes = publishes

    async def publish(self, change: PolicyChanged) -> bool:
        """Publish ``change`` on :data:`POLICY_CHANNEL`; ``False`` when Redis could not be reached."""
        try:
            await self._redis.publish(POLICY_CHANNEL, change.model_dump_json())
        except (RedisError, OSError) as exc:
            self._publishes.labels(outcome="failed").inc()
            logger.warning("could not publish policy change of %s (revision %d): %s", change.model, change.revision, exc)
            return False
        self._publishes.labels(outcome="published").inc()
        return True
