"""Redis names shared by the fleet and a client factory."""

from __future__ import annotations

import redis.asyncio as aioredis

PREDICTIONS_STREAM = "mlfleet:events:predictions"
"""Stream of :class:`~services.common.schemas.PredictionEvent` (field ``event``, JSON)."""

POLICY_CHANNEL = "mlfleet:policy"
"""Pub/sub channel of :class:`~services.common.schemas.PolicyChanged` messages."""


def connect(url: str, *, timeout_s: float = 2.0) -> aioredis.Redis:
    """An asyncio Redis client with bounded connect and socket timeouts."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        health_check_interval=30,
        decode_responses=False,
    )
