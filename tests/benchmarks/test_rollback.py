"""The rollback benchmark's summary: what it stores and prints from the timed rounds."""

from __future__ import annotations

import pytest

from benchmarks.rollback import distribution, summarise


def test_the_summary_judges_each_rollback_by_its_last_gateway():
    rounds = [(0.010, [0.020, 0.045]), (0.012, [0.030, 0.025]), (0.009, [0.015, 0.016])]
    summary = summarise(rounds, gateways=2)
    assert summary["rollbacks"] == 3 and summary["gateways"] == 2
    assert summary["all_gateways_serving"] == pytest.approx({"median_ms": 30.0, "p95_ms": 45.0, "max_ms": 45.0})
    assert summary["admin_call"] == pytest.approx({"median_ms": 10.0, "p95_ms": 12.0, "max_ms": 12.0})
    assert summary["rounds"][0]["admin_call_ms"] == pytest.approx(10.0)
    assert summary["rounds"][0]["gateways_serving_ms"] == pytest.approx([20.0, 45.0])


@pytest.mark.parametrize(("count", "p95"), [(20, 19.0), (12, 12.0), (100, 95.0), (1, 1.0)])
def test_p95_is_the_nearest_rank_a_measured_value(count, p95):
    values = [float(v) for v in range(count, 0, -1)]
    assert distribution(values)["p95_ms"] == p95
    assert distribution(values)["max_ms"] == float(count)
