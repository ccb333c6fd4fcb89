"""Consume prediction events from the Redis stream with a consumer group, exactly once.

Each batch's counter increments and its ``XACK`` go to Redis in one ``MULTI``/``EXEC``:
a monitor killed at any moment has either applied a batch and acknowledged it, or done
neither, in which case the entries stay pending and are read again — by the same consumer
name on restart (``XREADGROUP`` from ``0``) or by another consumer once they have been
idle ``reclaim_idle_ms`` (``XAUTOCLAIM``). An entry is counted twice only if a live
consumer holds a batch longer than ``reclaim_idle_ms``, so that setting must exceed that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from opentelemetry.trace import SpanKind, Tracer
from redis.exceptions import RedisError, ResponseError

from services.common.schemas import PredictionEvent
from services.common.telemetry import context_from_traceparent
from services.monitor.cancellation import stop_if_cancelled
from services.monitor.samples import SampleStore
from services.monitor.schemas import ConsumerStats
from services.monitor.stats import BucketKey, InvalidEvent, add_event, bucket_key, parse_event
from services.monitor.store import AggregateStore, version_segment
from services.monitor.telemetry import MonitorMetrics

logger = logging.getLogger("mlfleet.monitor.consumer")

EVENT_FIELD = b"event"
RETRY_MIN_S = 0.1
Entry = tuple[bytes | None, dict[bytes, bytes] | None]


@dataclass(frozen=True)
class ConsumerConfig:
    stream: str
    group: str
    consumer: str
    batch_size: int
    block_ms: int
    reclaim_idle_ms: int
    retry_max_s: float
    linger_s: float = 0.0
    """After a batch smaller than ``batch_size``, wait this long before reading again, so the next batch is larger."""
    commit_timeout_s: float = 5.0
    """Bound of one batch's transaction, which runs on a client without per-reply timeouts."""

    @property
    def totals_key(self) -> str:
        return f"mlfleet:monitor:group:{self.stream}:{self.group}"


@dataclass
class Tally:
    """One batch, parsed: what to add, what to acknowledge, what was rejected."""

    buckets: dict[BucketKey, Counter[str]] = field(default_factory=dict)
    ids: list[bytes] = field(default_factory=list)
    processed: Counter[tuple[str, str]] = field(default_factory=Counter)
    invalid: int = 0
    events: list[PredictionEvent] = field(default_factory=list)
    """Valid events, for the live samples and prediction records."""
    traced: list[PredictionEvent] = field(default_factory=list)
    """Events that carry a ``traceparent``: each gets a processing span in its prediction's trace."""


def tally(entries: Sequence[Entry]) -> Tally:
    """Parse a batch; an invalid entry is logged and counted, never raised."""
    result = Tally()
    for entry_id, fields in entries:
        if entry_id is None:
            continue
        result.ids.append(entry_id)
        try:
            event = parse_event((fields or {}).get(EVENT_FIELD))
            key = bucket_key(event)
            counters = result.buckets.get(key) or Counter()
            add_event(counters, event)  # adds the whole event or, raising, nothing
            result.buckets[key] = counters
        except (InvalidEvent, ArithmeticError, TypeError, ValueError) as exc:
            result.invalid += 1
            logger.warning("invalid event %s acknowledged without counting: %s", entry_id.decode(), exc)
            continue
        result.processed[(event.model, version_segment(event.version))] += 1
        result.events.append(event)
        if event.traceparent:
            result.traced.append(event)
    return result


def entry_time_s(entry_id: bytes) -> float:
    """When an entry was added: the millisecond part of its stream ID."""
    return int(entry_id.split(b"-", 1)[0]) / 1000


class EventConsumer:
    def __init__(self, redis: aioredis.Redis, store: AggregateStore, config: ConsumerConfig,
                 metrics: MonitorMetrics, tracer: Tracer | None = None, *, samples: SampleStore | None = None,
                 commit_redis: aioredis.Redis | None = None) -> None:
        """``commit_redis``, when given, runs the batch transactions: a client made with ``reply_timeout=False``
        (see :func:`services.common.redis.connect`); the transaction is bounded by ``commit_timeout_s`` instead."""
        self._redis = redis
        self._commit_redis = commit_redis or redis
        self._samples = samples
        self._tracer = tracer
        self._store = store
        self.config = config
        self._metrics = metrics
        self.processed = 0
        self.processing_lag_s: float | None = None

    async def run(self) -> None:
        """Consume until cancelled; when Redis fails, retry with exponential backoff."""
        delay = RETRY_MIN_S
        while True:
            try:
                await self._ensure_group()
                await self._drain_own_pending()
                await self._reclaim()
                delay = RETRY_MIN_S
                await self._consume_new()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                logger.warning("redis unavailable (%s); retrying in %.1f s", exc, delay)
            except Exception:
                logger.exception("consumer loop failed; retrying in %.1f s", delay)
            stop_if_cancelled()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.retry_max_s)

    async def group_exists(self) -> bool:
        try:
            groups = await self._redis.xinfo_groups(self.config.stream)
        except ResponseError:
            return False
        return any(g["name"].decode() == self.config.group for g in groups)

    async def stats(self) -> ConsumerStats:
        cfg = self.config
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(cfg.totals_key)
            pipe.xinfo_stream(cfg.stream)
            pipe.xinfo_groups(cfg.stream)
            totals, stream, groups = await pipe.execute()
        group: dict[str, Any] = next((g for g in groups if g["name"].decode() == cfg.group), {})
        last_delivered = group.get("last-delivered-id") or b"0-0"
        last_generated = stream.get("last-generated-id") or b"0-0"
        return ConsumerStats(
            stream=cfg.stream, group=cfg.group, consumer=cfg.consumer,
            events_processed=int(totals.get(b"processed", 0)),
            events_invalid=int(totals.get(b"invalid", 0)),
            processed_by_this_consumer=self.processed,
            pending=int(group.get("pending", 0)),
            stream_length=int(stream.get("length", 0)),
            lag_s=max(entry_time_s(last_generated) - entry_time_s(last_delivered), 0.0),
            processing_lag_s=self.processing_lag_s,
            consumers=int(group.get("consumers", 0)),
        )

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.config.stream, self.config.group, id="0", mkstream=True)
            logger.info("created consumer group %s on %s", self.config.group, self.config.stream)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, cursor: bytes | str, *, block_ms: int | None = None) -> list[Entry]:
        cfg = self.config
        reply = await self._redis.xreadgroup(cfg.group, cfg.consumer, {cfg.stream: cursor},
                                             count=cfg.batch_size, block=block_ms)
        return reply[0][1] if reply else []

    async def _drain_own_pending(self) -> None:
        """Count the entries this consumer name read but never acknowledged (a restart)."""
        cursor: bytes | str = "0"
        while entries := await self._read(cursor):
            await self._commit(entries)
            cursor = entries[-1][0] or cursor

    async def _reclaim(self) -> None:
        """Take over entries idle on other (dead) consumers, count them, drop consumers left empty."""
        cfg = self.config
        cursor: bytes | str = "0-0"
        while True:
            reply = await self._redis.xautoclaim(cfg.stream, cfg.group, cfg.consumer, cfg.reclaim_idle_ms,
                                                 start_id=cursor, count=cfg.batch_size)
            cursor, entries = reply[0], reply[1]
            if entries:
                logger.info("reclaimed %d pending entries", len(entries))
                await self._commit(entries)
            if cursor in (b"0-0", "0-0"):
                break
        await self._drain_own_pending()
        await self._forget_idle_consumers()

    async def _forget_idle_consumers(self) -> None:
        cfg = self.config
        for consumer in await self._redis.xinfo_consumers(cfg.stream, cfg.group):
            name = consumer["name"].decode()
            if name != cfg.consumer and consumer["pending"] == 0 and consumer["idle"] >= cfg.reclaim_idle_ms:
                await self._redis.xgroup_delconsumer(cfg.stream, cfg.group, name)

    async def _consume_new(self) -> None:
        reclaim_every_s = self.config.reclaim_idle_ms / 1000
        last_reclaim = time.monotonic()
        while True:
            if time.monotonic() - last_reclaim >= reclaim_every_s:
                await self._reclaim()
                last_reclaim = time.monotonic()
            entries = await self._read(">", block_ms=self.config.block_ms)
            if entries:
                await self._commit(entries)
                if len(entries) < self.config.batch_size and self.config.linger_s > 0:
                    await asyncio.sleep(self.config.linger_s)
            stop_if_cancelled()

    async def _commit(self, entries: Sequence[Entry]) -> None:
        """Apply a batch's counts and acknowledge it in one transaction, then update metrics."""
        started_ns = time.time_ns()
        batch = tally(entries)
        if not batch.ids:
            return
        cfg = self.config
        async with asyncio.timeout(cfg.commit_timeout_s), self._commit_redis.pipeline(transaction=True) as pipe:
            self._store.queue_counts(pipe, batch.buckets)
            skipped = self._samples.queue_events(pipe, batch.events) if self._samples is not None else {}
            pipe.hincrby(cfg.totals_key, "processed", sum(batch.processed.values()))
            pipe.hincrby(cfg.totals_key, "invalid", batch.invalid)
            pipe.xack(cfg.stream, cfg.group, *batch.ids)
            await pipe.execute()
        for (model, version), count in batch.processed.items():
            self._metrics.events_processed.labels(model=model, version=version).inc(count)
        self._metrics.events_invalid.inc(batch.invalid)
        for model, count in skipped.items():
            self._metrics.samples_skipped.labels(model=model).inc(count)
        self.processed += sum(batch.processed.values())
        self.processing_lag_s = max(time.time() - entry_time_s(batch.ids[-1]), 0.0)
        self._metrics.processing_lag.set(self.processing_lag_s)
        self._trace(batch, started_ns, len(entries))

    def _trace(self, batch: Tally, started_ns: int, batch_size: int) -> None:
        """One consumer span per traced event, a child of the span that published it."""
        if self._tracer is None:
            return
        for event in batch.traced:
            span = self._tracer.start_span(
                f"{self.config.stream} process", context=context_from_traceparent(event.traceparent),
                kind=SpanKind.CONSUMER, start_time=started_ns,
                attributes={"messaging.system": "redis", "messaging.destination.name": self.config.stream,
                            "messaging.operation.type": "process", "messaging.consumer.group.name": self.config.group,
                            "messaging.batch.message_count": batch_size, "mlfleet.model": event.model,
                            "mlfleet.version": event.version or 0, "mlfleet.request_id": event.request_id},
            )
            span.end()
