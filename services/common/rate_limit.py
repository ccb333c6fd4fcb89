"""Per-key rate limits: one token bucket per API key, in the process that checks the key.

A key limited to ``N`` requests per minute may burst ``N`` requests, then gets one more every
``60 / N`` seconds. Limits hold per service replica (each keeps its own buckets): a fleet of
``R`` gateways lets a key make up to ``R × N`` pinned requests a minute.

Pure logic with an injectable clock, so it is unit-tested without waiting.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_TRACKED_KEYS = 4096
"""Buckets kept at most; the least recently used is forgotten first (it starts full again)."""


@dataclass
class TokenBucket:
    """Up to ``capacity`` tokens, refilled at ``refill_per_s`` a second."""

    capacity: float
    tokens: float
    updated_at: float
    refill_per_s: float

    def take(self, now: float) -> float:
        """Take a token: 0 when one was there, else the seconds until one will be (nothing taken)."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.refill_per_s

    def take_up_to(self, wanted: int, now: float) -> int:
        """Take ``wanted`` whole tokens, or as many as there are; how many were taken."""
        self._refill(now)
        granted = min(wanted, int(self.tokens))
        self.tokens -= granted
        return granted

    def full_at(self, now: float) -> bool:
        """Whether the bucket has refilled to its capacity by ``now`` (it then grants what a new one would)."""
        return self.tokens + max(0.0, now - self.updated_at) * self.refill_per_s >= self.capacity

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + max(0.0, now - self.updated_at) * self.refill_per_s)
        self.updated_at = now


class KeyRateLimiter:
    """Token buckets by key id (the key's hash, never the key itself)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_TRACKED_KEYS,
                 on_limited: Callable[[], None] | None = None) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.on_limited = on_limited
        """Called once per refused request (e.g. a Prometheus counter's ``inc``)."""

    def retry_after(self, key_id: str, per_minute: int | None) -> int:
        """Count one request of ``key_id``: 0 when it may go on, else the whole seconds to wait before retrying.

        ``per_minute`` of ``None`` means unlimited; a changed limit starts a fresh, full bucket.
        """
        if per_minute is None:
            self._buckets.pop(key_id, None)
            return 0
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None or bucket.capacity != per_minute:
            bucket = TokenBucket(capacity=per_minute, tokens=float(per_minute), updated_at=now,
                                 refill_per_s=per_minute / 60.0)
            self._buckets[key_id] = bucket
        self._buckets.move_to_end(key_id)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        wait_s = bucket.take(now)
        if wait_s <= 0:
            return 0
        if self.on_limited is not None:
            self.on_limited()
        return max(1, math.ceil(wait_s))
