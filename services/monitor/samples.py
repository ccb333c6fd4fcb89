"""Live samples and logged predictions in Redis, written in the consumer's transaction.

Keys:

- ``mlfleet:monitor:live:{model}:{version}`` — capped stream (``MAXLEN ~ samples_max``), one
  entry per successful prediction event: its time, request and trace ids, feature vectors,
  feature names and scores. Drift windows are read from it, so every monitor replica sees the
  same windows and a restart keeps them.
- ``mlfleet:monitor:pred:{request_id}`` — hash ``version → {"m","t","s","l"}`` (model, time,
  scores, predicted labels), expiring ``prediction_ttl_s`` after the prediction: what feedback
  joins with. A shadow version's prediction of the same request is a second field.
- ``mlfleet:monitor:seen:{request_id}`` — marker kept ``seen_ttl_s``, so feedback arriving after
  the prediction expired is reported ``late``, not ``unknown``.

Both are queued on the consumer's ``MULTI`` with the counts and the ``XACK``, so an event is
sampled exactly once however often the monitor restarts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from services.common.schemas import PredictionEvent
from services.monitor.store import PREFIX

SAMPLE_FIELD = b"e"

RECORD_EVENTS = f"""
local samples_max, prediction_ttl, seen_ttl = ARGV[1], ARGV[2], ARGV[3]
for i = 1, #KEYS, 3 do
  local at = i + 3
  redis.call('XADD', KEYS[i], 'MAXLEN', '~', samples_max, '*', '{SAMPLE_FIELD.decode()}', ARGV[at])
  redis.call('HSET', KEYS[i + 1], ARGV[at + 1], ARGV[at + 2])
  redis.call('EXPIRE', KEYS[i + 1], prediction_ttl)
  redis.call('SET', KEYS[i + 2], '1', 'EX', seen_ttl)
end
return #KEYS / 3
"""
"""Each event's sample, prediction record and seen marker. ``KEYS``: per event its live stream, prediction and seen
keys. ``ARGV``: ``samples_max``, the two TTLs, then per event its sample, version and prediction record."""


def live_key(model: str, version: int) -> str:
    return f"{PREFIX}:live:{model}:{version}"


def prediction_key(request_id: str) -> str:
    return f"{PREFIX}:pred:{request_id}"


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
    return orjson.dumps({"m": event.model, "t": event.timestamp, "s": event.scores, "l": event.labels})


class SampleStore:
    def __init__(self, redis: aioredis.Redis, *, samples_max: int, prediction_ttl_s: int, seen_ttl_s: int) -> None:
        self._redis = redis
        self._samples_max = samples_max
        self._prediction_ttl_s = prediction_ttl_s
        self._seen_ttl_s = max(seen_ttl_s, prediction_ttl_s)

    def queue_events(self, pipe: Pipeline, events: Iterable[PredictionEvent]) -> None:
        """Queue the samples and prediction records of successful, versioned events on ``pipe``: one script call for
        the whole batch (its ``XADD``, ``HSET``, ``EXPIRE`` and ``SET`` per event run in Redis), where four
        pipelined commands per event cost the monitor about 25 µs of CPU per event to pack and parse. ``EVAL``, not
        a registered script: on a pipeline, redis-py would check the script exists (a round trip) before every
        transaction; Redis caches the compiled body either way."""
        keys: list[str] = []
        args: list[bytes | str | int] = [self._samples_max, self._prediction_ttl_s, self._seen_ttl_s]
        for event in events:
            if event.status != "ok" or event.version is None or not event.scores:
                continue
            keys += [live_key(event.model, event.version), prediction_key(event.request_id),
                     seen_key(event.request_id)]
            args += [_sample(event), event.version, _prediction(event)]
        if keys:
            pipe.eval(RECORD_EVENTS, len(keys), *keys, *args)

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
