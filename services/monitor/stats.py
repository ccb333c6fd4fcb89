"""Per-bucket (10 s) aggregates of prediction events, and what a window of them says.

Pure logic: no Redis, no FastAPI. One aggregate is a flat mapping of integer counters
(``requests``, ``predictions``, ``errors``, ``errors:<code>``, ``lat:<i>``, ``lat_sum_us``,
``score:<i>``, ``variant:<v>``), so that adding buckets is adding counters and Redis can
apply them with ``HINCRBY``.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pydantic import ValidationError

from services.common.errors import InvalidInput
from services.common.schemas import MODEL_NAME_PATTERN, PredictionEvent
from services.monitor.schemas import LatencyHistogram, LatencySummary, ScoreHistogram, VersionMetrics, Window

BUCKET_S = 10
DEFAULT_WINDOW_S = 300

LATENCY_MIN_MS = 0.1
LATENCY_STEPS_PER_DECADE = 20
LATENCY_DECADES = 6
LATENCY_EDGES_MS: tuple[float, ...] = (0.0,) + tuple(
    LATENCY_MIN_MS * 10 ** (k / LATENCY_STEPS_PER_DECADE) for k in range(LATENCY_STEPS_PER_DECADE * LATENCY_DECADES + 1)
)
"""Lower edges of the latency buckets: [0, 0.1 ms) then 5 % wide log steps up to 100 s; the last is open."""

SCORE_BINS = 20
SCORE_EDGES: tuple[float, ...] = tuple(i / SCORE_BINS for i in range(SCORE_BINS + 1))

LATENCY_KEYS = tuple(f"lat:{i}" for i in range(len(LATENCY_EDGES_MS)))
SCORE_KEYS = tuple(f"score:{i}" for i in range(SCORE_BINS))
"""Counter names of each latency bucket and score bin, made once rather than formatted per event."""

MAX_ERROR_CODE_LEN = 64
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)


class InvalidEvent(ValueError):
    """A stream entry that cannot be counted; it is acknowledged and reported, never retried."""


class BucketKey(NamedTuple):
    model: str
    version: int | None
    bucket: int


def latency_bucket(latency_ms: float) -> int:
    """Index ``i`` with ``LATENCY_EDGES_MS[i] <= latency_ms < LATENCY_EDGES_MS[i + 1]``."""
    return bisect.bisect_right(LATENCY_EDGES_MS, latency_ms) - 1


def score_bucket(score: float) -> int | None:
    """Bin of a score, clamped into [0, 1]; ``None`` for NaN or infinity."""
    if not math.isfinite(score):
        return None
    return min(max(int(score * SCORE_BINS), 0), SCORE_BINS - 1)


MAX_LATENCY_MS = 24 * 3600 * 1000.0
MAX_INSTANCES = 1_000_000
"""Far beyond any real request's, and small enough that Redis's 64-bit counters (``HINCRBY``) cannot overflow on
them: one event past them would fail its batch's whole transaction, half applied (Redis does not roll back)."""


def parse_event(raw: bytes | str | None) -> PredictionEvent:
    """Validate one entry's ``event`` field, or raise :class:`InvalidEvent` saying why."""
    if raw is None:
        raise InvalidEvent("entry has no 'event' field")
    try:
        event = PredictionEvent.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidEvent(f"not a PredictionEvent: {exc.errors()[0].get('msg', 'invalid')}") from None
    if not _MODEL_NAME.match(event.model):
        raise InvalidEvent(f"invalid model name {event.model[:80]!r}")
    if not math.isfinite(event.latency_ms) or event.latency_ms > MAX_LATENCY_MS:
        raise InvalidEvent(f"latency_ms is not a finite time of at most {MAX_LATENCY_MS:.0f} ms")
    if event.instances > MAX_INSTANCES:
        raise InvalidEvent(f"instances exceeds {MAX_INSTANCES}")
    if not math.isfinite(event.timestamp) or event.timestamp < 0:
        raise InvalidEvent("timestamp is not a valid unix time")
    return event


def bucket_key(event: PredictionEvent) -> BucketKey:
    return BucketKey(event.model, event.version, int(event.timestamp // BUCKET_S))


def add_event(counters: Counter[str], event: PredictionEvent) -> None:
    """Add the counters of one event to ``counters`` (its bucket's). What can fail (an overflowing latency or score)
    is computed first, so an event is added whole or not at all."""
    latency = LATENCY_KEYS[latency_bucket(event.latency_ms)]
    latency_us = round(event.latency_ms * 1000)
    scores = [SCORE_KEYS[index] for index in map(score_bucket, event.scores) if index is not None]
    counters["requests"] += 1
    if event.status == "ok":
        counters["predictions"] += event.instances
    else:
        counters["errors"] += 1
        counters[f"errors:{(event.error_code or 'unknown')[:MAX_ERROR_CODE_LEN]}"] += 1
    counters[latency] += 1
    counters["lat_sum_us"] += latency_us
    for key in scores:
        counters[key] += 1
    if event.variant is not None:
        counters[f"variant:{event.variant.value}"] += 1


def event_counters(event: PredictionEvent) -> Counter[str]:
    """The counters one event adds to its bucket."""
    counters: Counter[str] = Counter()
    add_event(counters, event)
    return counters


def accumulate(events: Iterable[PredictionEvent]) -> dict[BucketKey, Counter[str]]:
    """Sum the counters of ``events`` per (model, version, bucket)."""
    buckets: dict[BucketKey, Counter[str]] = {}
    for event in events:
        add_event(buckets.setdefault(bucket_key(event), Counter()), event)
    return buckets


def merge(aggregates: Iterable[Mapping[str, int]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for aggregate in aggregates:
        total.update(aggregate)
    return total


def histogram(aggregate: Mapping[str, int], prefix: str, size: int) -> list[int]:
    """Dense counts of the ``<prefix>:<i>`` counters, ``i`` in ``range(size)``."""
    return [int(aggregate.get(f"{prefix}:{i}", 0)) for i in range(size)]


def quantile(counts: Sequence[int], edges: Sequence[float], q: float) -> float:
    """The ``q``-quantile of a non-empty histogram, interpolated linearly inside its bucket.

    ``edges[i]`` is the lower edge of bucket ``i``; the last bucket is open above and
    answers its lower edge.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside [0, 1]")
    total = sum(counts)
    if total == 0:
        raise ValueError("an empty histogram has no quantiles")
    rank = q * total
    below = 0
    for i, count in enumerate(counts):
        if count and below + count >= rank:
            if i + 1 >= len(edges):
                return edges[i]
            low, high = edges[i], edges[i + 1]
            fraction = min(max(rank - below, 0.0) / count, 1.0)
            return min(low + (high - low) * fraction, high)
        below += count
    raise AssertionError("unreachable: the ranks are covered by the counts")


def latency_summary(counts: Sequence[int], sum_us: int) -> LatencySummary | None:
    """Percentiles and mean of a latency histogram; ``None`` when it is empty."""
    total = sum(counts)
    if total == 0:
        return None
    p50, p95, p99 = (quantile(counts, LATENCY_EDGES_MS, q) for q in (0.50, 0.95, 0.99))
    return LatencySummary(p50=p50, p95=p95, p99=p99, mean=sum_us / 1000 / total)


def summarize(version: int | None, aggregate: Mapping[str, int]) -> VersionMetrics:
    """What a rollout controller needs about one version, from its summed buckets."""
    requests = int(aggregate.get("requests", 0))
    errors = int(aggregate.get("errors", 0))
    latency = histogram(aggregate, "lat", len(LATENCY_EDGES_MS))
    return VersionMetrics(
        version=version,
        requests=requests,
        predictions=int(aggregate.get("predictions", 0)),
        errors=errors,
        error_rate=errors / requests if requests else 0.0,
        errors_by_code=_suffixed(aggregate, "errors:"),
        latency_ms=latency_summary(latency, int(aggregate.get("lat_sum_us", 0))),
        latency_histogram=LatencyHistogram(edges=list(LATENCY_EDGES_MS), counts=latency),
        score_histogram=ScoreHistogram(edges=list(SCORE_EDGES), counts=histogram(aggregate, "score", SCORE_BINS)),
        variants=_suffixed(aggregate, "variant:"),
    )


def _suffixed(aggregate: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: int(v) for k, v in sorted(aggregate.items()) if k.startswith(prefix) and v}


@dataclass(frozen=True)
class BucketRange:
    """Minute buckets ``first..last`` (inclusive)."""

    first: int
    last: int

    def buckets(self) -> range:
        return range(self.first, self.last + 1)

    def window(self) -> Window:
        return Window(start=self.first * BUCKET_S, end=(self.last + 1) * BUCKET_S, bucket_s=BUCKET_S)


def resolve_window(*, window_s: float | None, start: float | None, end: float | None, now: float,
                   retention_s: float, max_window_s: float | None = None) -> BucketRange:
    """The buckets covering either the last ``window_s`` seconds or ``[start, end)``.

    Raises :class:`InvalidInput` for a window that is empty, reversed, half given, given
    both ways, longer than the retention of the aggregates, or a ``window_s`` longer than ``max_window_s``
    (``start``/``end`` are bounded by the retention alone: the rollout controller asks for a step's whole span,
    which a step held for want of traffic can stretch past any such cap).
    """
    if window_s is not None and (start is not None or end is not None):
        raise InvalidInput("give either window_s or start and end, not both")
    if (start is None) != (end is None):
        raise InvalidInput("start and end go together")
    if start is None or end is None:
        window_s = DEFAULT_WINDOW_S if window_s is None else window_s
        if not math.isfinite(window_s):
            raise InvalidInput("window_s must be a finite number of seconds")
        start, end = now - window_s, now
    for name, value in (("start", start), ("end", end)):
        if not math.isfinite(value) or value < 0:
            raise InvalidInput(f"{name} must be a unix time in seconds")
    if end <= start:
        raise InvalidInput("the window must be longer than zero seconds (start < end, window_s > 0)")
    if end - start > retention_s:
        raise InvalidInput(f"the window is longer than the {retention_s:.0f} s the aggregates are kept")
    if max_window_s is not None and window_s is not None and window_s > max_window_s:
        raise InvalidInput(f"window_s is longer than the {max_window_s:.0f} s one query may read "
                           "(query_window_max_s); ask Prometheus for longer spans")
    return BucketRange(int(start // BUCKET_S), math.ceil(end / BUCKET_S) - 1)
