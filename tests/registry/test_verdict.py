"""The rollout verdict: pure checks of canary vs stable numbers, and what a rollout does next."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.registry.schemas import RolloutChecks, Verdict
from services.registry.verdict import (
    Judgement,
    Move,
    Outcome,
    Position,
    VersionNumbers,
    decide,
    judge,
    latency_samples,
)

EDGES = [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
CHECKS = RolloutChecks()


def numbers(latencies_ms, *, errors: int = 0, accuracy: float | None = None,
            labelled: int | None = None) -> VersionNumbers:
    latencies = np.asarray(latencies_ms, dtype=float)
    counts = np.histogram(latencies, bins=EDGES + [np.inf])[0]
    return VersionNumbers(requests=len(latencies), errors=errors, p99_ms=float(np.percentile(latencies, 99)),
                          latency_edges=EDGES, latency_counts=counts.tolist(), accuracy=accuracy, labelled=labelled)


def test_histograms_expand_to_bucket_midpoints_and_the_open_last_bucket_to_its_edge():
    assert latency_samples([0, 2, 4], [1, 2, 1]).tolist() == [1.0, 3.0, 3.0, 4.0]
    assert latency_samples([0, 2], []).size == 0


def test_too_few_canary_requests_hold():
    judgement = judge(numbers([3] * 4), numbers([3] * 100), CHECKS, min_requests=5)
    assert judgement.outcome is Outcome.insufficient
    assert "fewer than 5" in judgement.reasons[0]


def test_an_equal_canary_passes():
    rng = np.random.default_rng(0)
    judgement = judge(numbers(rng.gamma(4, 1, 200)), numbers(rng.gamma(4, 1, 800)), CHECKS, min_requests=100)
    assert judgement.outcome is Outcome.passed, judgement.reasons


def test_a_significantly_higher_error_rate_fails_unless_allowed():
    canary, stable = numbers([3] * 200, errors=20), numbers([3] * 800, errors=10)
    failed = judge(canary, stable, CHECKS, min_requests=10)
    assert failed.outcome is Outcome.failed and "canary errs more" in failed.reasons[0]
    allowance = RolloutChecks(max_error_rate_increase=0.10)
    assert judge(canary, stable, allowance, min_requests=10).outcome is Outcome.passed


def test_a_higher_error_rate_that_chance_explains_passes():
    judgement = judge(numbers([3] * 300, errors=5), numbers([3] * 1200, errors=12), CHECKS, min_requests=10)
    assert judgement.outcome is Outcome.passed
    assert "not significant, error rate passes" in judgement.reasons[0]


def failed_share(canary_rate: float, stable_rate: float, *, intervals: int = 400) -> float:
    """The share of simulated intervals (200 canary and 1,800 stable requests, errors drawn at the given rates) in
    which the canary fails."""
    rng = np.random.default_rng(7)
    failed = 0
    for _ in range(intervals):
        canary = VersionNumbers(requests=200, errors=int(rng.binomial(200, canary_rate)))
        stable = VersionNumbers(requests=1800, errors=int(rng.binomial(1800, stable_rate)))
        failed += judge(canary, stable, CHECKS, min_requests=100).outcome is Outcome.failed
    return failed / intervals


def test_a_canary_as_good_as_stable_is_rarely_failed_and_a_worse_one_mostly():
    """Compared raw, an equal canary failed about half of its intervals at these rates: with max_failures 1 a
    healthy rollout of four steps got through about one time in sixteen."""
    assert failed_share(0.01, 0.01) < 0.06
    assert failed_share(0.02, 0.02) < 0.06
    assert failed_share(0.05, 0.01) > 0.9


def test_a_much_slower_canary_fails_on_latency():
    rng = np.random.default_rng(1)
    judgement = judge(numbers(rng.gamma(4, 1, 100) + 40), numbers(rng.gamma(4, 1, 400)), CHECKS, min_requests=10)
    assert judgement.outcome is Outcome.failed
    assert "canary is slower" in judgement.reasons[0]
    assert judgement.latency_p_value < 1e-6


def test_a_p99_outlier_alone_does_not_fail_when_the_distributions_agree():
    """Two slow requests lift the canary's p99 far over the ratio, but the test finds no shift: latency passes."""
    rng = np.random.default_rng(2)
    canary = numbers(np.append(rng.gamma(4, 1, 98), [200.0, 200.0]))
    judgement = judge(canary, numbers(rng.gamma(4, 1, 400)), CHECKS, min_requests=10)
    assert judgement.outcome is Outcome.passed, judgement.reasons
    assert any("not significant" in r for r in judgement.reasons)


def test_a_significant_shift_within_the_absolute_tolerance_passes():
    """0.3 ms slower on a 2 ms model: real, significant, and no regression worth a rollback."""
    canary, stable = numbers([2.5] * 50 + [6.0] * 5), numbers([1.5] * 500 + [4.0] * 50)
    assert judge(canary, stable, CHECKS, min_requests=10).outcome is Outcome.passed
    strict = RolloutChecks(latency_tolerance_ms=0.0)
    assert judge(canary, stable, strict, min_requests=10).outcome is Outcome.failed


def test_a_significant_tail_blip_with_a_negligible_mean_shift_passes():
    """As seen under CI load: the canary's p99 and the test both say "slower", yet its average request is
    only ~0.3 ms slower — a noisy interval, not a regression. A canary whose every request is slower fails."""
    rng = np.random.default_rng(3)
    stable = numbers(np.append(rng.gamma(6, 0.27, 500), rng.uniform(4, 7, 8)))
    blip = numbers(np.append(rng.gamma(6, 0.32, 67), [10.4, 10.4]))
    judgement = judge(blip, stable, CHECKS, min_requests=10)
    assert judgement.outcome is Outcome.passed, judgement.reasons
    assert judgement.latency_p_value < CHECKS.latency_test_alpha
    assert any("a tail blip" in r for r in judgement.reasons)
    slower = numbers(np.append(rng.gamma(6, 0.32, 67), [10.4, 10.4]) + 3.0)
    assert judge(slower, stable, CHECKS, min_requests=10).outcome is Outcome.failed


def test_a_slower_but_within_ratio_canary_passes():
    judgement = judge(numbers([5.0] * 50 + [9.0] * 50), numbers([4.0] * 50 + [9.0] * 50),
                      RolloutChecks(max_p99_latency_ratio=1.5), min_requests=10)
    assert judgement.outcome is Outcome.passed


def test_accuracy_is_checked_only_when_both_have_feedback():
    same = [3.0] * 50
    worse = judge(numbers(same, accuracy=0.80), numbers(same, accuracy=0.85), CHECKS, min_requests=10)
    assert worse.outcome is Outcome.failed and "accuracy" in worse.reasons[0], "label counts unknown: threshold alone"
    few = judge(numbers(same, accuracy=0.80, labelled=40), numbers(same, accuracy=0.85, labelled=40), CHECKS,
                min_requests=10)
    assert few.outcome is Outcome.passed and any("not significant, accuracy passes" in r for r in few.reasons)
    many = judge(numbers(same, accuracy=0.80, labelled=2000), numbers(same, accuracy=0.85, labelled=2000), CHECKS,
                 min_requests=10)
    assert many.outcome is Outcome.failed and "canary is less accurate" in many.reasons[0]
    better_required = RolloutChecks(min_accuracy_delta=0.02)  # the test cannot back this: the threshold decides
    equal = judge(numbers(same, accuracy=0.90, labelled=500), numbers(same, accuracy=0.90, labelled=500),
                  better_required, min_requests=10)
    assert equal.outcome is Outcome.failed
    unknown = judge(numbers(same, accuracy=0.80), numbers(same), CHECKS, min_requests=10)
    assert unknown.outcome is Outcome.passed
    assert any("accuracy not compared" in r for r in unknown.reasons)


def test_no_stable_traffic_compares_errors_only():
    judgement = judge(numbers([3.0] * 20), VersionNumbers(), CHECKS, min_requests=10)
    assert judgement.outcome is Outcome.passed
    assert any("latency not compared" in r for r in judgement.reasons)


def position(step_index=0, steps=(10, 25, 50, 100), failures=0, max_failures=1, require_approval=False,
             approved=False) -> Position:
    return Position(step_index, list(steps), failures, max_failures, require_approval, approved)


PASSED, FAILED, SCANT = (Judgement(Outcome.passed, ["ok"]), Judgement(Outcome.failed, ["bad"]),
                         Judgement(Outcome.insufficient, ["few"]))


@pytest.mark.parametrize("step_index, move, verdict", [(0, Move.advance, Verdict.advance),
                                                       (1, Move.advance, Verdict.advance),
                                                       (2, Move.promote, Verdict.promote)])
def test_passing_advances_until_the_last_step_below_100_then_promotes(step_index, move, verdict):
    decision = decide(position(step_index), PASSED)
    assert (decision.move, decision.verdict) == (move, verdict)


def test_a_last_step_below_100_is_judged_before_promotion():
    assert decide(position(1, steps=(10, 50)), PASSED).move is Move.promote
    assert decide(position(0, steps=(10, 50)), PASSED).move is Move.advance


def test_approval_is_awaited_before_the_final_step():
    waiting = decide(position(2, require_approval=True), PASSED)
    assert (waiting.move, waiting.verdict) == (Move.wait_for_approval, Verdict.hold)
    assert decide(position(2, require_approval=True, approved=True), PASSED).move is Move.promote
    assert decide(position(0, require_approval=True), PASSED).move is Move.advance


def test_insufficient_data_holds_without_counting_a_failure():
    decision = decide(position(1, failures=1, max_failures=3), SCANT)
    assert (decision.move, decision.verdict, decision.failures) == (Move.stay, Verdict.hold, 1)


def test_a_step_held_past_its_progress_deadline_aborts_without_counting_a_failure():
    def held(held_s, deadline=600.0, judgement=SCANT):
        return decide(Position(1, [10, 25, 50, 100], 0, 1, False, False, held_s=held_s, progress_deadline_s=deadline),
                      judgement)

    assert held(599.9).move is Move.stay
    aborted = held(600.0)
    assert (aborted.move, aborted.verdict, aborted.failures) == (Move.abort, Verdict.hold, 0)
    assert "few" in aborted.reasons and "progress deadline of 600 s" in aborted.reasons[-1]
    assert held(10**6, deadline=None).move is Move.stay
    # the deadline is for a step without a verdict: a step with one moves as it would have
    assert held(10**6, judgement=PASSED).move is Move.advance
    assert held(10**6, judgement=FAILED).move is Move.roll_back


@given(st.integers(1, 10), st.integers(0, 9))
def test_failures_roll_back_exactly_at_the_limit(max_failures, failures):
    failures = min(failures, max_failures - 1)
    decision = decide(position(failures=failures, max_failures=max_failures), FAILED)
    assert decision.verdict is Verdict.fail and decision.failures == failures + 1
    assert decision.move is (Move.roll_back if failures + 1 >= max_failures else Move.stay)
