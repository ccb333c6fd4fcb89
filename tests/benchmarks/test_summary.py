"""The benchmark's summary: means of the rounds, and each round's ratio to that round's ceiling."""

from __future__ import annotations

import pytest

from benchmarks import bench
from benchmarks.bench import CEILING, interpreter_speed, summarise, wake_up_round_trip
from benchmarks.wrk import WrkResult


def run(name: str, per_s: float, *, connections: int = 16) -> WrkResult:
    return WrkResult(name=name, connections=connections, requests=int(per_s * 5), errors=0, requests_per_s=per_s,
                     predictions_per_s=per_s, p50_ms=1.0, p95_ms=2.0, p99_ms=3.0, mean_ms=1.2)


def test_each_round_is_compared_with_its_own_ceiling():
    results = [run(CEILING, 10_000), run("full path", 4_100),
               run(CEILING, 12_000), run("full path", 6_000),
               run(CEILING, 13_000), run("full path", 5_720)]
    rows = {r["target"]: r for r in summarise(results)}
    full = rows["full path"]
    assert full["requests_per_s"] == pytest.approx(5_273.33, abs=0.01)
    assert full["ratio_to_ceiling"] == pytest.approx(5_273.33 / 11_666.67, rel=1e-4)
    assert full["ratio_by_round"] == pytest.approx([0.41, 0.50, 0.44])
    assert rows[CEILING]["ratio_by_round"] == [1.0, 1.0, 1.0]


def test_the_interpreter_speed_is_a_timing_of_this_host():
    speed = interpreter_speed()
    assert 0.05 < speed < 10_000, "sum(range(1000)) takes microseconds, never nanoseconds or seconds"


def test_the_wake_up_round_trip_is_a_timing_of_this_host():
    round_trip = wake_up_round_trip(rounds=200)
    assert 0.1 < round_trip < 100_000, "a byte to another process and back takes microseconds"


def test_the_wake_up_round_trip_fails_rather_than_time_an_echo_that_died(monkeypatch):
    monkeypatch.setattr(bench, "ECHO", "import sys; sys.exit(3)")
    with pytest.raises((RuntimeError, BrokenPipeError)):
        wake_up_round_trip(rounds=10)
