"""The client's resend of ``pending`` labels: which items go again, and how their new outcomes replace the old."""

from __future__ import annotations

from mlfleet.client import models as m
from mlfleet.client.feedback import merged_feedback, pending_feedback


def report(*outcomes: str) -> m.FeedbackReport:
    results = [m.FeedbackResult(request_id=f"r{i}", instance=0, outcome=o, versions=[1] if o == "accepted" else [])
               for i, o in enumerate(outcomes)]
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return m.FeedbackReport(counts=counts, results=results)


def test_only_pending_items_are_sent_again_and_their_new_outcomes_take_their_places():
    items = [m.FeedbackItem(request_id=f"r{i}", label=1) for i in range(4)]
    first = report("accepted", "pending", "unknown", "pending")
    positions = pending_feedback(items, first)
    assert positions == [1, 3]
    again = m.FeedbackReport(counts={"accepted": 1, "pending": 1}, results=[
        m.FeedbackResult(request_id="r1", instance=0, outcome="accepted", versions=[2]),
        m.FeedbackResult(request_id="r3", instance=0, outcome="pending", versions=[])])
    merged = merged_feedback(first, positions, again)
    assert [r.outcome for r in merged.results] == ["accepted", "accepted", "unknown", "pending"]
    assert merged.results[1].versions == [2]
    assert merged.counts == {"accepted": 2, "unknown": 1, "pending": 1}
    assert pending_feedback(items, merged) == [3]
