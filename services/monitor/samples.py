"""Live samples and logged predictions in Redis, written in the consumer's transaction.

Keys:

- ``mlfleet:monitor:live:{model}:{version}`` — capped stream (``MAXLEN ~ samples_max``; it expires
  ``samples_ttl_s``, the aggregates' retention, after its last sample), one
  entry per sampled successful prediction event: its time, request and trace ids, feature
  vectors, feature names and scores. Drift windows are read from it, so every monitor replica
  sees the same windows and a restart keeps them. Each version's events are sampled at about
  ``samples_per_s`` per second and monitor replica (after a burst of up to ``samples_max``):
  above that rate each consumer batch (~100 ms of traffic) contributes a uniform random subset
  of its events, so the stream holds about as many samples per second of a busy moment as of a
  quiet one; the rest are counted in ``mlfleet_monitor_samples_skipped_total``. At 6,000
  events/s a 5,000-entry stream written in full held the last second only, and ~90 % of what
  was written was trimmed unread. Drift windows ("the last N instances", ``last_request_id``)
  are then of the newest *sampled* instances.
- ``mlfleet:monitor:pred:{request_id}`` — hash ``model:version → {"m","t","s","l","p"}`` (model, time,
  scores, predicted labels, the positive class), expiring ``prediction_ttl_s`` after the prediction: what feedback
  joins with. A shadow version's prediction of the same request is a second field, and so is another model's
  prediction under the same request id (a caller forwarding one id to several models). Every successful event
  gets one, sampled or not. (Records written before the model was in the field are ``version`` alone.)
- ``mlfleet:monitor:seen:{request_id}`` — marker kept ``seen_ttl_s``, so feedback arriving after
  the prediction expired is reported ``late``, not ``unknown``. Only for a request id that does not
  date its prediction: the gateway's own ids, and a caller's UUIDv7s made with the prediction, do
  (:func:`services.common.request_ids.dated_by`), and feedback reads their age from the id instead. At ~150
  bytes a marker for a week, against ~390 for a day's prediction record, the markers were ~70 % of
  the monitor's Redis memory.

All are queued on the consumer's ``MULTI`` with the counts and the ``XACK``, so an event is
recorded exactly once however often the monitor restarts.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from services.common.rate_limit import TokenBucket
from services.common.request_ids import dated_by
from services.common.schemas import PredictionEvent
from services.monitor.store import PREFIX

SAMPLE_FIELD = b"e"

RECORD_EVENTS = f"""
local samples_max, prediction_ttl, seen_ttl, samples_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local sampled, recorded = tonumber(ARGV[5]), tonumber(ARGV[6])
for i = 1, sampled do
  redis.call('XADD', KEYS[i], 'MAXLEN', '~', samples_max, '*', '{SAMPLE_FIELD.decode()}', ARGV[6 + i])
  redis.call('EXPIRE', KEYS[i], samples_ttl)
end
local at = 7 + sampled
for i = sampled + 1, sampled + recorded do
  redis.call('HSET', KEYS[i], ARGV[at], ARGV[at + 1])
  redis.call('EXPIRE', KEYS[i], prediction_ttl)
  at = at + 2
end
for i = sampled + recorded + 1, #KEYS do
  redis.call('SET', KEYS[i], '1', 'EX', seen_ttl)
end
return sampled
"""
"""The sampled events' samples, every event's prediction record, then the seen markers. ``KEYS``: each sample's live
stream, each event's prediction key, then the seen keys of the events whose request id does not say when it was
made. ``ARGV``: ``samples_max``, the three TTLs (records, markers, live streams), the number of samples, the number
of events, the samples, then per
event its record's field (``model:version``) and prediction record."""


class SampleBudget:
    """How many of a version's events may become live samples now: a token bucket per live stream, refilled at
    ``rate_per_s`` tokens a second up to ``burst``. A ``rate_per_s`` of 0 grants every event.

    Per monitor process: replicas sharing a consumer group each sample their share of the events at this rate. The
    tokens are taken when a batch is queued: a transaction that then fails has spent them, and its batch, read again,
    gets what is left (fewer samples after a Redis failure, never a sample counted twice)."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 prune_above: int = 1024) -> None:
        """``prune_above``: with more buckets than this, a new stream's bucket first drops those that have refilled
        to the burst (a full bucket grants what a new one would, so forgetting it changes nothing): versions come
        and go for as long as the monitor runs, and their buckets would otherwise stay."""
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._prune_above = prune_above
        self._buckets: dict[str, TokenBucket] = {}
        """Live stream key → its bucket (full when first seen)."""

    @property
    def tracked(self) -> int:
        """How many streams' buckets are kept."""
        return len(self._buckets)

    def take(self, key: str, wanted: int) -> int:
        """Tokens granted for ``wanted`` events of ``key`` (all of them, or what is left)."""
        if self._rate <= 0:
            return wanted
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._prune_above:
                self._drop_full(now)
            bucket = self._buckets[key] = TokenBucket(self._burst, self._burst, now, self._rate)
        return bucket.take_up_to(wanted, now)

    def _drop_full(self, now: float) -> None:
        full = [key for key, bucket in self._buckets.items() if bucket.full_at(now)]
        for key in full:
            del self._buckets[key]


def live_key(model: str, version: int) -> str:
    return f"{PREFIX}:live:{model}:{version}"


def prediction_key(request_id: str) -> str:
    return f"{PREFIX}:pred:{request_id}"


def record_field(model: str, version: int) -> str:
    """A prediction record's field in its request id's hash (model names hold no ``:``)."""
    return f"{model}:{version}"


def seen_key(request_id: str) -> str:
    return f"{PREFIX}:seen:{request_id}"


@dataclass
class LiveWindow:
    """The instances of one drift window, newest last, feature columns by name."""

    features: dict[str, np.ndarray]
    scores: np.ndarray
    request_ids: list[str]
    trace_ids: list[str | None]
    timestamps: np.ndarray
    last_entry: str | None = None
    """Stream ID of the newest entry: the identity of the window."""
    feature_names: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.request_ids)


def _sample(event: PredictionEvent) -> bytes:
    return orjson.dumps({"t": event.timestamp, "r": event.request_id, "tr": event.trace_id,
                         "n": event.feature_names, "f": event.features, "s": event.scores})


def _prediction(event: PredictionEvent) -> bytes:
    return orjson.dumps({"m": event.model, "t": event.timestamp, "s": event.scores, "l": event.labels,
                         "p": event.positive_label})


class SampleStore:
    def __init__(self, redis: aioredis.Redis, *, samples_max: int, prediction_ttl_s: int, seen_ttl_s: int,
                 samples_per_s: float = 0, samples_ttl_s: int = 7 * 24 * 3600) -> None:
        """``samples_ttl_s``: a live stream without a new sample for this long expires (a retired version's)."""
        self._redis = redis
        self._samples_max = samples_max
        self._samples_ttl_s = samples_ttl_s
        self._budget = SampleBudget(samples_per_s, burst=samples_max)
        self._prediction_ttl_s = prediction_ttl_s
        self._seen_ttl_s = max(seen_ttl_s, prediction_ttl_s)

    def queue_events(self, pipe: Pipeline, events: Iterable[PredictionEvent]) -> Counter[str]:
        """Queue the prediction records (and seen markers) of successful, versioned events on ``pipe``, and the live
        samples of those the budget grants (per version, a uniform random subset in arrival order): one script call
        for the whole batch (its ``XADD``, ``HSET``, ``EXPIRE`` and ``SET`` commands run in Redis), where four
        pipelined commands per event cost the monitor about 25 µs of CPU per event to pack and parse. ``EVAL``, not a
        registered script: on a pipeline, redis-py would check the script exists (a round trip) before every
        transaction; Redis caches the compiled body either way. Returns, per model, the events not sampled."""
        by_stream: dict[str, list[PredictionEvent]] = {}
        record_keys: list[str] = []
        records: list[bytes | str | int] = []
        seen_keys: list[str] = []
        for event in events:
            if event.status != "ok" or event.version is None or not event.scores:
                continue
            by_stream.setdefault(live_key(event.model, event.version), []).append(event)
            record_keys.append(prediction_key(event.request_id))
            records += [record_field(event.model, event.version), _prediction(event)]
            if not dated_by(event.request_id, event.timestamp):
                seen_keys.append(seen_key(event.request_id))
        if not record_keys:
            return Counter()
        sample_keys: list[str] = []
        samples: list[bytes] = []
        skipped: Counter[str] = Counter()
        for key, stream_events in by_stream.items():
            granted = self._budget.take(key, len(stream_events))
            if granted < len(stream_events):
                skipped[stream_events[0].model] += len(stream_events) - granted
                chosen = sorted(random.sample(range(len(stream_events)), granted))
                stream_events = [stream_events[i] for i in chosen]
            sample_keys += [key] * len(stream_events)
            samples += [_sample(event) for event in stream_events]
        pipe.eval(RECORD_EVENTS, len(sample_keys) + len(record_keys) + len(seen_keys), *sample_keys, *record_keys,
                  *seen_keys, self._samples_max, self._prediction_ttl_s, self._seen_ttl_s, self._samples_ttl_s,
                  len(samples), len(record_keys), *samples, *records)
        return skipped

    async def window(self, model: str, version: int, *, size: int | None = None,
                     since: float | None = None) -> LiveWindow:
        """The newest ``size`` instances, or those logged at or after ``since`` (unix s), or both."""
        key = live_key(model, version)
        if since is not None:
            entries = await self._redis.xrevrange(key, max="+", min=f"{int(since * 1000)}-0",
                                                  count=self._samples_max)
        else:
            entries = await self._redis.xrevrange(key, count=size or self._samples_max)
        return self._assemble(entries, size=size, since=since)

    @staticmethod
    def _assemble(entries: list, *, size: int | None, since: float | None) -> LiveWindow:
        rows: list[tuple[float, str, str | None, dict[str, float], float]] = []
        names: list[str] = []
        for _entry_id, fields in entries:
            sample = orjson.loads(fields[SAMPLE_FIELD])
            if since is not None and sample["t"] < since:
                continue
            names = names or sample["n"]
            vectors = sample["f"] or [[] for _ in sample["s"]]
            for vector, score in reversed(list(zip(vectors, sample["s"]))):
                rows.append((sample["t"], sample["r"], sample["tr"], dict(zip(sample["n"], vector)), score))
                if size is not None and len(rows) >= size:
                    break
            if size is not None and len(rows) >= size:
                break
        rows.reverse()
        columns = {name: np.array([r[3].get(name, np.nan) for r in rows], dtype=np.float64) for name in names}
        return LiveWindow(
            features=columns, scores=np.array([r[4] for r in rows], dtype=np.float64),
            request_ids=[r[1] for r in rows], trace_ids=[r[2] for r in rows],
            timestamps=np.array([r[0] for r in rows], dtype=np.float64),
            last_entry=entries[0][0].decode() if entries else None, feature_names=names,
        )
