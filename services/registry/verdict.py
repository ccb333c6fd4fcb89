"""Judge a canary against stable over one interval, and decide what the rollout does next.

Pure functions of numbers: no database, no HTTP, no clock. The checks follow the case
study in DESIGN.md — the canary's error rate not above stable's (plus an allowance), its
p99 latency within a ratio of stable's, its accuracy not below stable's when labelled
feedback exists — and, beyond fixed thresholds, a one-sided test of each (as Kayenta does):
latency fails only when the p99 ratio (and a small absolute tolerance) is exceeded *and* a
Mann–Whitney U test finds the canary significantly slower *and* the canary's mean request is
slower by more than that tolerance (the effect size: with hundreds of requests a negligible shift
is already "significant"). The error rate and the accuracy fail only when their threshold is
crossed *and* a Fisher exact test on the counts finds the canary significantly worse: compared
raw, a canary exactly as good as stable came out worse in about half of the intervals at a 1–2 %
error rate, and with the default ``max_failures`` of 1 a healthy candidate was rolled back far
more often than it was promoted. So one noisy interval does not flip the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from services.registry.schemas import RolloutChecks, Verdict


@dataclass(frozen=True)
class VersionNumbers:
    """What the monitor says about one version over the judged interval."""

    requests: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    latency_edges: Sequence[float] = ()
    latency_counts: Sequence[int] = ()
    accuracy: float | None = None
    """Accuracy on labelled feedback; ``None`` when the monitor has none."""
    labelled: int | None = None
    """How many labels ``accuracy`` is over; ``None`` when unknown (then accuracy is judged on its threshold alone)."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def record(self) -> dict[str, Any]:
        """The numbers kept in a rollout step's history."""
        numbers: dict[str, Any] = {"requests": self.requests, "errors": self.errors,
                                   "error_rate": round(self.error_rate, 6)}
        for name in ("p50_ms", "p95_ms", "p99_ms", "mean_ms", "accuracy", "labelled"):
            value = getattr(self, name)
            if value is not None:
                numbers[name] = round(value, 4)
        return numbers


class Outcome(StrEnum):
    passed = "passed"
    insufficient = "insufficient"
    failed = "failed"


@dataclass(frozen=True)
class Judgement:
    outcome: Outcome
    reasons: list[str]
    latency_p_value: float | None = None


def latency_samples(edges: Sequence[float], counts: Sequence[int]) -> np.ndarray:
    """A histogram expanded to one value per request at its bucket's midpoint (the open last bucket: its edge)."""
    edges_array = np.asarray(edges, dtype=np.float64)
    if len(counts) == 0:
        return np.empty(0)
    midpoints = np.append((edges_array[:-1] + edges_array[1:]) / 2, edges_array[-1])[: len(counts)]
    return np.repeat(midpoints, np.asarray(counts, dtype=np.int64))


def slower_p_value(canary: VersionNumbers, stable: VersionNumbers) -> float | None:
    """One-sided Mann–Whitney U p-value that the canary's latencies are larger than stable's."""
    canary_samples = latency_samples(canary.latency_edges, canary.latency_counts)
    stable_samples = latency_samples(stable.latency_edges, stable.latency_counts)
    if canary_samples.size == 0 or stable_samples.size == 0:
        return None
    if np.ptp(np.concatenate([canary_samples, stable_samples])) == 0:
        return 1.0  # every request in one bucket: no evidence either way
    from scipy.stats import mannwhitneyu  # on first use: services.common.deferred_imports says why

    return float(mannwhitneyu(canary_samples, stable_samples, alternative="greater", method="asymptotic").pvalue)


def mean_shift_ms(canary: VersionNumbers, stable: VersionNumbers) -> float:
    """How much slower the canary's average request is (the effect size beside the test's p-value)."""
    canary_samples = latency_samples(canary.latency_edges, canary.latency_counts)
    stable_samples = latency_samples(stable.latency_edges, stable.latency_counts)
    if canary_samples.size == 0 or stable_samples.size == 0:
        return 0.0
    return float(canary_samples.mean() - stable_samples.mean())


def worse_p_value(canary_bad: int, canary_total: int, stable_bad: int, stable_total: int) -> float | None:
    """One-sided Fisher exact p-value that the canary's share of bad outcomes (errors, wrong labels) is larger than
    stable's; ``None`` when either has no outcomes."""
    if canary_total <= 0 or stable_total <= 0:
        return None
    table = [[canary_bad, canary_total - canary_bad], [stable_bad, stable_total - stable_bad]]
    from scipy.stats import fisher_exact  # on first use: services.common.deferred_imports says why

    return float(fisher_exact(table, alternative="greater").pvalue)


def backed_by_test(text: str, p_value: float | None, alpha: float, *, worse: str, passes: str) -> tuple[bool, str]:
    """Whether a crossed threshold fails, and its reason: it fails unless its Fisher test ran and found the canary
    not significantly worse (``p_value`` ``None``: no test, the threshold alone decides)."""
    if p_value is None:
        return True, text
    if p_value < alpha:
        return True, f"{text}; Fisher p={_p(p_value)} < {alpha:g}: {worse}"
    return False, f"{text}; Fisher p={_p(p_value)}: not significant, {passes}"


def judge(canary: VersionNumbers, stable: VersionNumbers, checks: RolloutChecks, *, min_requests: int) -> Judgement:
    """Whether the canary passed the interval, failed it, or had too few requests to tell."""
    if canary.requests < min_requests:
        return Judgement(Outcome.insufficient, [f"canary served {canary.requests} requests, fewer than {min_requests}"])
    failures: list[str] = []
    notes: list[str] = []

    allowed = stable.error_rate + checks.max_error_rate_increase
    error_text = f"canary error rate {canary.error_rate:.2%} vs stable {stable.error_rate:.2%} (allowed {allowed:.2%})"
    if canary.error_rate > allowed + 1e-12:
        # without stable traffic there is nothing to test against: the threshold alone decides
        errors_p = worse_p_value(canary.errors, canary.requests, stable.errors, stable.requests)
        failed, error_text = backed_by_test(error_text, errors_p, checks.rate_test_alpha, worse="canary errs more",
                                            passes="error rate passes")
        (failures if failed else notes).append(error_text)
    else:
        notes.append(error_text)

    p_value = None
    if stable.requests == 0 or canary.p99_ms is None or stable.p99_ms is None:
        notes.append("stable served no requests: latency not compared")
    else:
        ratio = canary.p99_ms / stable.p99_ms if stable.p99_ms > 0 else math.inf
        over = ratio > checks.max_p99_latency_ratio and canary.p99_ms - stable.p99_ms > checks.latency_tolerance_ms
        p_value = slower_p_value(canary, stable)
        significant = p_value is not None and p_value < checks.latency_test_alpha
        shift = mean_shift_ms(canary, stable)
        material = shift > checks.latency_tolerance_ms
        text = (f"canary p99 {canary.p99_ms:.2f} ms vs stable {stable.p99_ms:.2f} ms (ratio {ratio:.2f}, "
                f"allowed {checks.max_p99_latency_ratio:.2f} or +{checks.latency_tolerance_ms:g} ms); "
                f"Mann–Whitney p={_p(p_value)}; mean {shift:+.2f} ms")
        if over and significant and material:
            failures.append(text + f": canary is slower (p < {checks.latency_test_alpha:g}, "
                                   f"mean shift > {checks.latency_tolerance_ms:g} ms)")
        elif over and significant:
            notes.append(text + f" ≤ {checks.latency_tolerance_ms:g} ms: a tail blip, latency passes")
        elif over:
            notes.append(text + f", p ≥ {checks.latency_test_alpha:g}: not significant, latency passes")
        else:
            notes.append(text)

    if canary.accuracy is not None and stable.accuracy is not None:
        delta = canary.accuracy - stable.accuracy
        text = (f"canary accuracy {canary.accuracy:.4f} vs stable {stable.accuracy:.4f} "
                f"(delta {delta:+.4f}, required ≥ {checks.min_accuracy_delta:+.4f})")
        if delta < checks.min_accuracy_delta - 1e-12:
            wrong_p = None
            # the test asks whether the canary is worse than stable: it can back a threshold that allows the canary
            # to be as good or worse, not one that requires it to be better (a positive delta decides alone)
            if canary.labelled is not None and stable.labelled is not None and checks.min_accuracy_delta <= 0:
                wrong_p = worse_p_value(round((1 - canary.accuracy) * canary.labelled), canary.labelled,
                                        round((1 - stable.accuracy) * stable.labelled), stable.labelled)
            # label counts unknown, or an improvement required: the threshold alone decides
            failed, text = backed_by_test(text, wrong_p, checks.rate_test_alpha, worse="canary is less accurate",
                                          passes="accuracy passes")
            (failures if failed else notes).append(text)
        else:
            notes.append(text)
    else:
        notes.append("no labelled feedback for both versions: accuracy not compared")

    if failures:
        return Judgement(Outcome.failed, failures + notes, p_value)
    return Judgement(Outcome.passed, notes, p_value)


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


@dataclass(frozen=True)
class Position:
    """Where a rollout stands when a verdict comes in."""

    step_index: int
    steps: Sequence[float]
    failures: int
    max_failures: int
    require_approval: bool
    approved: bool
    held_s: float = 0.0
    """How long the step's interval has been open: a hold for lack of data keeps it open."""
    progress_deadline_s: float | None = None
    """A step held longer than this for lack of data aborts the rollout; ``None`` holds for as long as it takes."""

    @property
    def last_judged_index(self) -> int:
        """The last step judged before promotion: a final 100 % step is reached by promoting."""
        return len(self.steps) - 2 if self.steps[-1] >= 100 else len(self.steps) - 1


class Move(StrEnum):
    advance = "advance"
    stay = "stay"
    """Keep the percentage and judge again next interval."""
    wait_for_approval = "wait_for_approval"
    promote = "promote"
    roll_back = "roll_back"
    abort = "abort"
    """End the rollout, traffic back to stable, without failing the candidate: it was never judged."""


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    move: Move
    failures: int
    reasons: list[str] = field(default_factory=list)


def decide(position: Position, judgement: Judgement) -> Decision:
    """What a rollout at ``position`` does after ``judgement``."""
    if judgement.outcome is Outcome.insufficient:
        deadline = position.progress_deadline_s
        if deadline is not None and position.held_s >= deadline:
            return Decision(Verdict.hold, Move.abort, position.failures, judgement.reasons + [
                f"no verdict within the progress deadline of {deadline:g} s: aborting, back to stable"])
        return Decision(Verdict.hold, Move.stay, position.failures, judgement.reasons)
    if judgement.outcome is Outcome.failed:
        failures = position.failures + 1
        if failures >= position.max_failures:
            return Decision(Verdict.fail, Move.roll_back, failures,
                            judgement.reasons + [f"failure {failures} of {position.max_failures} allowed: rolling back"])
        return Decision(Verdict.fail, Move.stay, failures,
                        judgement.reasons + [f"failure {failures} of {position.max_failures} allowed: holding"])
    if position.step_index < position.last_judged_index:
        return Decision(Verdict.advance, Move.advance, position.failures, judgement.reasons)
    if position.require_approval and not position.approved:
        return Decision(Verdict.hold, Move.wait_for_approval, position.failures,
                        judgement.reasons + ["waiting for approval before the final step"])
    return Decision(Verdict.promote, Move.promote, position.failures, judgement.reasons)
