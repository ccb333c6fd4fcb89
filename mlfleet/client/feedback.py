"""Labels sent again while their predictions are on their way to the monitor (the ``pending`` outcome)."""

from __future__ import annotations

from mlfleet.client import models as m

FEEDBACK_WAIT_S = 10.0
"""How long the client sends ``pending`` labels again: their predictions' events are on their way to the monitor."""


def pending_feedback(items: list[m.FeedbackItem], report: m.FeedbackReport) -> list[int]:
    """Positions of the items the monitor answered ``pending`` (its results are in the items' order)."""
    return [i for i, result in enumerate(report.results) if result.outcome == "pending" and i < len(items)]


def merged_feedback(report: m.FeedbackReport, positions: list[int], again: m.FeedbackReport) -> m.FeedbackReport:
    """``report`` with the results at ``positions`` replaced by ``again``'s (the same items sent again, in order)."""
    results = list(report.results)
    for position, result in zip(positions, again.results):
        results[position] = result
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    return m.FeedbackReport(counts=counts, results=results)
