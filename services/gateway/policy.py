"""Keeps the routing table current: fetch from the registry, refetch on every policy message,
poll to repair missed messages, and swap the table atomically. If the registry is down the
last table keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
import redis.asyncio as aioredis
from prometheus_client import Gauge

from services.common.redis import POLICY_CHANNEL
from services.common.schemas import RoutingTable
from services.gateway.router import RouteBook

logger = logging.getLogger("mlfleet.gateway.policy")

FIRST_LOAD_RETRY_S = 0.5
RECONNECT_PAUSE_S = 1.0


class PolicySync:
    def __init__(self, *, registry_url: str, redis: aioredis.Redis, poll_s: float, timeout_s: float,
                 revision_gauge: Gauge) -> None:
        self._http = httpx.AsyncClient(base_url=registry_url, timeout=timeout_s)
        self._redis = redis
        self._poll_s = poll_s
        self._revision_gauge = revision_gauge
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self.book: RouteBook | None = None
        """The table requests are routed by; ``None`` until the first successful load."""
        self.loaded_at: float | None = None

    async def refresh(self) -> bool:
        """Fetch ``/v1/routes`` and swap it in; ``False`` (and the old table kept) on any failure."""
        async with self._lock:
            try:
                response = await self._http.get("/v1/routes")
                response.raise_for_status()
                table = RoutingTable.model_validate_json(response.content)
            except Exception as exc:  # unreachable, HTTP error or a malformed table: keep the last one
                logger.warning("routing table refresh failed: %s", exc)
                return False
            self.book = RouteBook(table)
            self.loaded_at = time.time()
            self._revision_gauge.set(table.revision)
            return True

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._poll(), name="gateway-policy-poll"),
            asyncio.create_task(self._listen(), name="gateway-policy-listen"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._http.aclose()

    async def _poll(self) -> None:
        """Retry quickly until the first table loads, then poll every ``poll_s``."""
        while True:
            loaded = await self.refresh()
            await asyncio.sleep(self._poll_s if loaded or self.book is not None else FIRST_LOAD_RETRY_S)

    async def _listen(self) -> None:
        """Refetch on every ``PolicyChanged``; resubscribe (and refetch) after a Redis outage."""
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(POLICY_CHANNEL)
                await self.refresh()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self.refresh()
            except (aioredis.RedisError, OSError) as exc:
                logger.warning("policy channel lost: %s", exc)
                await asyncio.sleep(RECONNECT_PAUSE_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
