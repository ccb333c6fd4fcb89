"""The per-key token bucket, on a fake clock."""

from __future__ import annotations

import pytest

from services.common.auth import Identity, Role, enforce_rate_limit
from services.common.errors import RateLimited
from services.common.rate_limit import KeyRateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_key_bursts_its_limit_then_waits_for_one_token(clock):
    limiter = KeyRateLimiter(clock=clock)
    assert [limiter.retry_after("a", 3) for _ in range(3)] == [0, 0, 0]
    assert limiter.retry_after("a", 3) == 20
    clock.now += 19.5
    assert limiter.retry_after("a", 3) == 1
    clock.now += 0.5
    assert limiter.retry_after("a", 3) == 0
    assert limiter.retry_after("a", 3) == 20


def test_refills_up_to_capacity_only(clock):
    limiter = KeyRateLimiter(clock=clock)
    limiter.retry_after("a", 2)
    clock.now += 3600
    assert [limiter.retry_after("a", 2) for _ in range(3)] == [0, 0, 30]


def test_keys_have_their_own_buckets_and_no_limit_means_unlimited(clock):
    limiter = KeyRateLimiter(clock=clock)
    assert limiter.retry_after("a", 1) == 0
    assert limiter.retry_after("a", 1) == 60
    assert limiter.retry_after("b", 1) == 0
    assert all(limiter.retry_after("c", None) == 0 for _ in range(1000))


def test_a_changed_limit_starts_a_fresh_bucket(clock):
    limiter = KeyRateLimiter(clock=clock)
    limiter.retry_after("a", 1)
    assert limiter.retry_after("a", 1) > 0
    assert limiter.retry_after("a", 5) == 0


def test_refusals_are_counted_and_least_recent_keys_are_forgotten(clock):
    refused = []
    limiter = KeyRateLimiter(clock=clock, max_keys=2, on_limited=lambda: refused.append(1))
    limiter.retry_after("a", 1)
    limiter.retry_after("a", 1)
    assert len(refused) == 1
    limiter.retry_after("b", 1)
    limiter.retry_after("c", 1)
    assert limiter.retry_after("a", 1) == 0, "a was forgotten, so its bucket starts full"


def test_enforce_raises_a_429_with_retry_after(clock):
    limiter = KeyRateLimiter(clock=clock)
    identity = Identity(name="ci", role=Role.deployer, rate_limit_per_minute=1)
    enforce_rate_limit(limiter, "mlf_secret", identity)
    with pytest.raises(RateLimited) as refused:
        enforce_rate_limit(limiter, "mlf_secret", identity)
    problem = refused.value.to_problem()
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "60"}
    assert problem["code"] == "rate-limited" and problem["retry_after_s"] == 60
    assert "mlf_secret" not in str(problem)
