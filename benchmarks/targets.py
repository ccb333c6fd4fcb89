"""Issue 8's targets, judged from one benchmark report: what ``make bench`` prints last and stores as ``targets``.

Every verdict is taken from figures of the same run (ratios against that run's direct Triton), so a report says by
itself which targets it meets; a target whose figures the run did not measure (``--connections 16`` only, no
peers) is ``not measured``, never met.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

OPEN_LOOP_RATE = 3200.0
OPEN_LOOP_P99_MS = 23.0
OPEN_LOOP_SUSTAINED = 0.97
"""Share of the offered rate the run must have answered: the generator's own achieved rate over a few seconds
falls a little short of the offered one even against direct Triton (99.8 % here)."""
RATIO_AT_16 = 0.5
C1_P50_MARGIN_MS = 0.75
BATCHED_PREDICTIONS_PER_S = 25_000.0
BATCH = 32
"""Rows per request of the batched runs."""
FULL_PATH = "gateway full path"
ROUTING_ONLY = "gateway routing only"
CEILING = "direct triton"
BATCHED = f"{FULL_PATH} x{BATCH}"

Verdict = Literal["met", "not met", "not measured"]


@dataclass(frozen=True)
class TargetVerdict:
    target: str
    measured: str
    verdict: Verdict

    def as_dict(self) -> dict:
        return asdict(self)


def _row(summary: list[dict], target: str, connections: int) -> dict | None:
    return next((r for r in summary if r["target"] == target and r["connections"] == connections), None)


def open_loop_verdict(open_loops: dict[str, dict], offered_rate: float) -> TargetVerdict:
    name = f"full path ≥ {OPEN_LOOP_RATE:,.0f}/s open loop, p99 ≤ {OPEN_LOOP_P99_MS:g} ms, no errors"
    run = open_loops.get(FULL_PATH)
    if run is None or offered_rate < OPEN_LOOP_RATE:
        return TargetVerdict(name, f"not run at {OPEN_LOOP_RATE:,.0f}/s", "not measured")
    met = (run["achieved_rps"] >= OPEN_LOOP_SUSTAINED * offered_rate and run["p99_ms"] <= OPEN_LOOP_P99_MS
           and run["errors"] == 0)
    return TargetVerdict(name, f"{run['achieved_rps']:,.0f} of {offered_rate:,.0f}/s answered, p99 "
                               f"{run['p99_ms']:.2f} ms, {run['errors']} errors", "met" if met else "not met")


def ratio_verdict(summary: list[dict]) -> TargetVerdict:
    name = f"full path at c=16 ≥ {RATIO_AT_16:.0%} of direct Triton"
    row = _row(summary, FULL_PATH, 16)
    if row is None:
        return TargetVerdict(name, "no c=16 run", "not measured")
    rounds = "/".join(f"{r * 100:.0f}" for r in row["ratio_by_round"])
    return TargetVerdict(name, f"{row['ratio_to_ceiling']:.0%} (rounds {rounds} %)",
                         "met" if row["ratio_to_ceiling"] >= RATIO_AT_16 else "not met")


def latency_verdict(summary: list[dict]) -> TargetVerdict:
    name = f"full path p50 at c=1 ≤ direct Triton's + {C1_P50_MARGIN_MS:g} ms"
    full, ceiling = _row(summary, FULL_PATH, 1), _row(summary, CEILING, 1)
    if full is None or ceiling is None:
        return TargetVerdict(name, "no c=1 run", "not measured")
    extra = full["p50_ms"] - ceiling["p50_ms"]
    return TargetVerdict(name, f"{full['p50_ms']:.2f} against {ceiling['p50_ms']:.2f} ms (+{extra:.2f})",
                         "met" if extra <= C1_P50_MARGIN_MS else "not met")


def batched_verdict(summary: list[dict]) -> TargetVerdict:
    name = f"{BATCH} rows per request ≥ {BATCHED_PREDICTIONS_PER_S:,.0f} predictions/s"
    rows = [r for r in summary if r["target"] == BATCHED]
    if not rows:
        return TargetVerdict(name, "no 32-row run", "not measured")
    best = max(rows, key=lambda r: r["predictions_per_s"])
    return TargetVerdict(name, f"{best['predictions_per_s']:,.0f}/s at c={best['connections']}",
                         "met" if best["predictions_per_s"] >= BATCHED_PREDICTIONS_PER_S else "not met")


def peers_verdict(summary: list[dict]) -> TargetVerdict:
    """Routing only against each peer at each concurrency: the peers infer in one process without features,
    canary or events, so that is the row where the gateway does the same work."""
    name = "ahead of every peer where it does the same work (routing only)"
    pairs = [(peer, _row(summary, ROUTING_ONLY, peer["connections"]))
             for peer in summary if peer["target"].startswith("peer ")]
    pairs = [(peer, ours) for peer, ours in pairs if ours is not None]
    if not pairs:
        return TargetVerdict(name, "no peer run", "not measured")
    behind = [f"{peer['target'].removeprefix('peer ')} at c={peer['connections']} "
              f"({ours['requests_per_s']:,.0f} against {peer['requests_per_s']:,.0f} req/s)"
              for peer, ours in pairs if ours["requests_per_s"] <= peer["requests_per_s"]]
    if behind:
        return TargetVerdict(name, "behind " + "; ".join(behind), "not met")
    return TargetVerdict(name, f"ahead in all {len(pairs)} comparisons", "met")


def events_verdict(events: dict) -> TargetVerdict:
    name = "event loss under overload counted, not silent"
    return TargetVerdict(name, f"{events['events_dropped']:,.0f} dropped (counted), "
                               f"{events['unaccounted']:,.0f} unaccounted",
                         "met" if events["unaccounted"] == 0 else "not met")


def judge(report: dict, *, offered_rate: float) -> list[TargetVerdict]:
    """Every target of issue 8, judged from ``report`` (the benchmark's JSON, before ``targets`` is added)."""
    summary = report["summary"]
    return [open_loop_verdict(report["open_loop"], offered_rate), ratio_verdict(summary), latency_verdict(summary),
            batched_verdict(summary), peers_verdict(summary), events_verdict(report["events_under_overload"])]


def print_verdicts(verdicts: list[TargetVerdict]) -> None:
    print("\ntargets of issue 8 (from this run alone)")
    for v in verdicts:
        print(f"  {v.verdict:<13} {v.target}: {v.measured}")
