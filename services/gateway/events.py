"""Prediction events to the Redis stream, off the request path.

Requests only ``put_nowait`` into a bounded queue (a full queue drops the event and counts
it). One background writer drains up to ``batch_size`` events at a time (after the first, it
waits ``linger_s`` for more, so light load makes a few larger writes) and writes them in
one round trip: one call of a small Lua script that runs ``XADD … MAXLEN ~`` per event inside
Redis. A pipeline of one ``XADD`` per event did the same with redis-py packing every command
and parsing every reply in Python, about a tenth of the gateway's CPU under load. The script is
called on a connection of the writer's own (:class:`~services.common.pipelined_redis.PipelinedRedis`):
through redis-py's script and pool layers one write of 20 events cost ~260 µs of the gateway's
CPU on a slow host, on that connection ~70 µs. A slow or dead Redis costs events (each write has
a deadline), never requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.common.pipelined_redis import PipelinedRedis, Script
from services.common.redis import PREDICTIONS_STREAM
from services.gateway.metrics import GatewayMetrics

logger = logging.getLogger("mlfleet.gateway.events")

RETRY_PAUSE_S = 0.5
XADD_EACH = Script("""
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[i])
end
return #ARGV - 1
""")
"""``KEYS[1]``: the stream; ``ARGV``: the length cap, then one JSON event per entry to append."""


class EventWriter:
    def __init__(self, redis: PipelinedRedis, metrics: GatewayMetrics, *, queue_size: int, batch_size: int,
                 maxlen: int, linger_s: float = 0.0, write_timeout_s: float = 2.0) -> None:
        """``redis``: a connection for this writer alone, closed with it. ``linger_s``: after taking the first event,
        wait this long for more before writing, so a lightly loaded gateway makes a few larger writes instead of one
        per request (each write is a round trip to Redis). ``write_timeout_s``: a write not answered by then fails
        (its events are counted as dropped)."""
        self._redis = redis
        self._write_timeout_s = write_timeout_s
        self._metrics = metrics
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._maxlen = maxlen
        self._linger_s = linger_s
        self._holding = 0
        """Events taken from the queue and not yet written or counted as dropped."""
        self._task: asyncio.Task | None = None

    def enqueue(self, event: bytes) -> None:
        """Queue one :class:`~services.common.schemas.PredictionEvent` as JSON. Never blocks: a full queue drops
        the event."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._metrics.events_dropped.labels("queue_full").inc()
            return
        self._metrics.events_enqueued.inc()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-event-writer")

    async def close(self, *, drain_timeout_s: float | None = None) -> None:
        """Write what is queued and what the writer holds (bounded wait), then stop the writer and close its
        connection; events it still holds then are counted as dropped (``shutdown``)."""
        with contextlib.suppress(TimeoutError):
            # by default a little longer than a write's deadline, so that a write under way is not cut short
            async with asyncio.timeout(self._write_timeout_s + 0.5 if drain_timeout_s is None else drain_timeout_s):
                while ((not self._queue.empty() or self._holding) and self._task is not None
                       and not self._task.done()):
                    await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            self._holding = 1
            try:
                if self._linger_s > 0 and self._queue.qsize() < self._batch_size - 1:
                    await asyncio.sleep(self._linger_s)
                while len(batch) < self._batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                self._holding = len(batch)
                await self._write(batch)
            except asyncio.CancelledError:
                self._metrics.events_dropped.labels("shutdown").inc(len(batch))
                raise
            except Exception as exc:  # Redis down or slow: lose this batch, keep serving
                self._metrics.events_dropped.labels("write_failed").inc(len(batch))
                logger.warning("could not write %d prediction events: %r", len(batch), exc)
                self._holding = 0
                await asyncio.sleep(RETRY_PAUSE_S)
            else:
                self._metrics.events_written.inc(len(batch))
            self._holding = 0

    async def _write(self, batch: list[bytes]) -> None:
        async with asyncio.timeout(self._write_timeout_s):
            await self._redis.run_script(XADD_EACH, [PREDICTIONS_STREAM], [self._maxlen, *batch])
