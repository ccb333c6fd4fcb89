"""How the monitor reports a label it cannot join with a prediction: ``late`` or ``unknown``."""

from __future__ import annotations

import pytest

from services.common.request_ids import new_request_id
from services.monitor.feedback import unjoined_outcome

DAY, WEEK = 24 * 3600, 7 * 24 * 3600


@pytest.mark.parametrize(("age_s", "outcome"), [
    (60, "unknown"),  # its prediction should still be kept: it was never made, or not recorded yet
    (DAY + 60, "late"),  # kept a day, asked for after it
    (WEEK + 60, "unknown"),  # past the week anything is remembered
    (-3600, "unknown"),  # a time in the future is no prediction of ours
])
def test_a_timed_id_is_judged_by_its_age(age_s, outcome):
    now = 1_800_000_000.0
    request_id = new_request_id(now - age_s)
    for seen in (False, True):  # a timed id has no marker; its age decides
        assert unjoined_outcome(request_id, seen, now, prediction_ttl_s=DAY, seen_ttl_s=WEEK) == outcome


def test_an_untimed_id_is_judged_by_its_marker():
    judged = {seen: unjoined_outcome("req-1", seen, 1_800_000_000.0, prediction_ttl_s=DAY, seen_ttl_s=WEEK)
              for seen in (False, True)}
    assert judged == {False: "unknown", True: "late"}
