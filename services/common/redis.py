"""Redis names shared by the fleet and a client factory."""

from __future__ import annotations

import redis.asyncio as aioredis

PREDICTIONS_STREAM = "mlfleet:events:predictions"
"""Stream of :class:`~services.common.schemas.PredictionEvent` (field ``event``, JSON)."""

POLICY_CHANNEL = "mlfleet:policy"
"""Pub/sub channel of :class:`~services.common.schemas.PolicyChanged` messages."""


def connect(url: str, *, timeout_s: float = 2.0, reply_timeout: bool = True) -> aioredis.Redis:
    """An asyncio Redis client with bounded connect and socket timeouts.

    ``reply_timeout=False`` drops the socket timeout: redis-py then stops wrapping the read of every
    reply in its own timeout (a timer armed and cancelled per reply, a quarter of the monitor's CPU
    when it committed transactions of a thousand commands), and the caller must bound each call
    itself, e.g. with ``asyncio.timeout``."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s if reply_timeout else None,
        health_check_interval=30,
        decode_responses=False,
    )
