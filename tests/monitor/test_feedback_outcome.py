"""How the monitor reports a label it cannot join with a prediction: ``late``, ``pending`` or ``unknown``."""

from __future__ import annotations

import pytest

from services.common.request_ids import new_request_id
from services.monitor.feedback import unjoined_outcome

DAY, WEEK = 24 * 3600, 7 * 24 * 3600


@pytest.mark.parametrize(("age_s", "outcome"), [
    (0.5, "pending"),  # sent right after its prediction, whose event is still on its way through the stream
    (29, "pending"),
    (-30, "pending"),  # the caller's clock half a minute ahead of the monitor's
    (60, "unknown"),  # its prediction should be here by now: it was never made, or not recorded
    (DAY + 60, "late"),  # kept a day, asked for after it
    (WEEK + 60, "unknown"),  # past the week anything is remembered
    (-3600, "unknown"),  # a time in the future is no prediction of ours
])
def test_an_id_without_a_marker_is_judged_by_its_own_time(age_s, outcome):
    now = 1_800_000_000.0
    request_id = new_request_id(now - age_s)
    assert unjoined_outcome(request_id, False, now, prediction_ttl_s=DAY, seen_ttl_s=WEEK) == outcome


@pytest.mark.parametrize("request_id", ["req-1", pytest.param(new_request_id(1_800_000_000.0 - 60), id="uuid7-dated")])
def test_an_id_with_a_marker_is_late_and_one_without_time_or_marker_unknown(request_id):
    now = 1_800_000_000.0
    assert unjoined_outcome(request_id, True, now, prediction_ttl_s=DAY, seen_ttl_s=WEEK) == "late"
    assert unjoined_outcome("req-1", False, now, prediction_ttl_s=DAY, seen_ttl_s=WEEK) == "unknown"
