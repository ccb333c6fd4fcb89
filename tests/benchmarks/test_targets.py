"""Issue 8's targets judged from a benchmark report (``benchmarks/targets.py``): each verdict on either side of
its limit, and a run that did not measure a target never counts as meeting it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.targets import BATCHED, CEILING, FULL_PATH, PEER, ROUTING_ONLY, TUNED_PEER, judge

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def row(target: str, connections: int, *, rps: float, pps: float | None = None, p50: float = 1.0,
        ratio: float = 1.0, errors: int = 0) -> dict:
    return {"target": target, "connections": connections, "requests_per_s": rps,
            "predictions_per_s": rps if pps is None else pps, "p50_ms": p50, "ratio_to_ceiling": ratio,
            "ratio_by_round": [ratio, ratio, ratio], "errors": errors}


def report(*, ratio16: float = 0.55, full_p50: float = 1.0, ceiling_p50: float = 0.3, batched_pps: float = 30_000,
           routing_c1: float = 2_000, achieved: float = 3_195, p99: float = 9.0, errors: int = 0,
           unaccounted: int = 0) -> dict:
    summary = [row(CEILING, 1, rps=3_000, p50=ceiling_p50), row(FULL_PATH, 1, rps=1_000, p50=full_p50),
               row(ROUTING_ONLY, 1, rps=routing_c1), row(f"{PEER} mlserver", 1, rps=1_800),
               row(CEILING, 16, rps=12_000), row(FULL_PATH, 16, rps=12_000 * ratio16, ratio=ratio16),
               row(ROUTING_ONLY, 16, rps=9_000), row(f"{PEER} mlserver", 16, rps=2_300),
               row(BATCHED, 16, rps=batched_pps / 32, pps=batched_pps)]
    return {"summary": summary,
            "open_loop": {FULL_PATH: {"rate": 3_200.0, "achieved_rps": achieved, "p99_ms": p99, "errors": errors},
                          f"{FULL_PATH} at 1,600/s": {"rate": 1_600.0, "achieved_rps": 1_600, "p99_ms": 5.0,
                                                      "errors": 0}},
            "events_under_overload": {"events_dropped": 3, "unaccounted": unaccounted}}


def verdicts(**changes) -> list[str]:
    return [v.verdict for v in judge(report(**changes))]


def test_a_run_inside_every_limit_meets_every_target():
    assert verdicts() == ["met"] * 6


@pytest.mark.parametrize(("changes", "missed"), [
    ({"achieved": 3_150}, 0), ({"p99": 23.5}, 0), ({"errors": 1}, 0),
    ({"ratio16": 0.49}, 1),
    ({"full_p50": 1.06}, 2),
    ({"batched_pps": 24_000}, 3),
    ({"routing_c1": 1_700}, 4),
    ({"unaccounted": 1}, 5),
])
def test_each_target_is_missed_past_its_limit_and_only_that_one(changes, missed):
    expected = ["met"] * 6
    expected[missed] = "not met"
    assert verdicts(**changes) == expected


def test_what_a_run_did_not_measure_is_never_met():
    partial = report()
    partial["summary"] = [r for r in partial["summary"] if r["connections"] == 16 and not r["target"].startswith(PEER)]
    partial["open_loop"] = {}
    judged = judge(partial)
    assert [v.verdict for v in judged] == ["not measured", "met", "not measured", "met", "not measured", "met"]
    lower = report()
    del lower["open_loop"][FULL_PATH]  # what 1,600/s sustains says nothing of 3,200/s
    assert judge(lower)[0].verdict == "not measured"


def test_an_open_loop_run_at_3200_among_the_lower_rates_counts():
    runs = report(p99=40.0)
    runs["open_loop"][f"{FULL_PATH} at 3,200/s"] = {"rate": 3_200.0, "achieved_rps": 3_195, "p99_ms": 9.0, "errors": 0}
    assert judge(runs)[0].verdict == "met"


def with_errors(summary: list[dict], target: str, connections: int) -> list[dict]:
    return [dict(r, errors=7) if (r["target"], r["connections"]) == (target, connections) else r for r in summary]


@pytest.mark.parametrize(("target", "connections", "missed"), [
    (FULL_PATH, 16, 1), (CEILING, 16, 1), (FULL_PATH, 1, 2), (BATCHED, 16, 3), (ROUTING_ONLY, 1, 4),
])
def test_a_row_with_errors_never_meets_its_target(target, connections, missed):
    """Fast error answers would raise a row's throughput and lower its latency."""
    run = report()
    run["summary"] = with_errors(run["summary"], target, connections)
    judged = judge(run)
    assert judged[missed].verdict == "not met" and "7 errors" in judged[missed].measured


def test_a_peer_that_answered_errors_is_no_comparison():
    run = report(routing_c1=1_700)  # behind MLServer at c=1, but MLServer's figure there came with errors
    run["summary"] = with_errors(run["summary"], f"{PEER} mlserver", 1)
    judged = judge(run)[4]
    assert judged.verdict == "not measured" and "mlserver at c=1" in judged.measured


def test_a_peer_tuned_past_its_recommended_setting_is_reported_but_not_judged():
    """The issue names each peer at its recommended worker setting; MLServer inferring in its server's own process
    is faster at one connection, and the verdict says so without counting it."""
    run = report(routing_c1=2_000)
    tuned = f"{TUNED_PEER} mlserver pw=0"
    run["summary"] += [row(tuned, 1, rps=2_500), row(tuned, 16, rps=2_400)]
    judged = judge(run)[4]
    assert judged.verdict == "met"
    assert "behind mlserver pw=0 at c=1 (2,000 against 2,500 req/s)" in judged.measured
    assert "ahead of mlserver pw=0 at c=16" in judged.measured
    run["summary"] = with_errors(run["summary"], tuned, 16)
    assert "no comparison with mlserver pw=0 at c=16" in judge(run)[4].measured
    run["summary"] = [r for r in run["summary"] if not r["target"].startswith(f"{PEER} ")]
    assert judge(run)[4].verdict == "not measured"  # a tuned peer alone is no peer run


def test_a_stored_run_is_judged_from_its_own_figures():
    stored = json.loads((RESULTS / "bench-20261127-112151.json").read_text())
    judged = judge(stored)
    assert [v.verdict for v in judged] == ["met", "not met", "met", "met", "not met", "met"]
    assert judged[1].measured.startswith("47%")  # 5,945 against 12,617 requests/s at c=16
    assert "mlserver at c=1" in judged[4].measured  # routing only 1,369 against MLServer's 1,780 requests/s


def test_a_stored_run_with_a_tuned_peer_judges_the_peers_at_their_recommended_setting():
    stored = json.loads((RESULTS / "bench-20261127-131442.json").read_text())  # a slower host
    judged = judge(stored)
    assert [v.verdict for v in judged] == ["not met", "not met", "not met", "not met", "met", "met"]
    assert judged[4].measured.startswith("ahead in all 4 comparisons")  # MLServer and BentoML, c=1 and c=16
    assert "behind mlserver pw=0 at c=1 (803 against 893 req/s)" in judged[4].measured
