"""Issue 8's targets, judged from one benchmark report: what ``make bench`` prints last and stores as ``targets``.

Every verdict is taken from figures of the same run (ratios against that run's direct Triton), so a report says by
itself which targets it meets; a target whose figures the run did not measure (``--connections 16`` only, no
peers) is ``not measured``, never met. A closed-loop row with errors never meets a target (fast error answers would
raise its throughput and lower its latency), and a peer's row with errors is no comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

OPEN_LOOP_RATE = 3200.0
OPEN_LOOP_P99_MS = 23.0
OPEN_LOOP_SUSTAINED = 0.99
"""Share of its offered rate a run must have answered per second: the generator's achieved rate counts the drain
after its last send, so it falls a little short of the offered one even against direct Triton (99.8 % here)."""
RATIO_AT_16 = 0.5
C1_P50_MARGIN_MS = 0.75
BATCHED_PREDICTIONS_PER_S = 25_000.0
BATCH = 32
"""Rows per request of the batched runs."""
FULL_PATH = "gateway full path"
ROUTING_ONLY = "gateway routing only"
CEILING = "direct triton"
BATCHED = f"{FULL_PATH} x{BATCH}"
PEER = "peer"
"""Prefix of the rows of peers at their recommended worker setting: the ones the peer target judges."""
TUNED_PEER = "tuned peer"
"""Prefix of the rows of peers tuned past their recommended setting: reported beside the peer verdict, not judged."""

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


def _errors(*rows: dict) -> int:
    return sum(row["errors"] for row in rows)


def open_loop_verdict(open_loops: dict[str, dict]) -> TargetVerdict:
    """Met by a full-path run at a rate of at least 3,200/s (``--rate``, or one of ``--lower-rates``) that answered
    its rate, within the p99, without errors."""
    name = f"full path ≥ {OPEN_LOOP_RATE:,.0f}/s open loop, p99 ≤ {OPEN_LOOP_P99_MS:g} ms, no errors"
    runs = [run for label, run in open_loops.items()
            if (label == FULL_PATH or label.startswith(f"{FULL_PATH} at ")) and run["rate"] >= OPEN_LOOP_RATE]
    if not runs:
        return TargetVerdict(name, f"no run at {OPEN_LOOP_RATE:,.0f}/s or more", "not measured")

    def meets(run: dict) -> bool:
        return (run["achieved_rps"] >= OPEN_LOOP_SUSTAINED * run["rate"] and run["p99_ms"] <= OPEN_LOOP_P99_MS
                and run["errors"] == 0)

    run = next((run for run in runs if meets(run)), runs[0])
    return TargetVerdict(name, f"{run['achieved_rps']:,.0f} of {run['rate']:,.0f}/s answered, p99 "
                               f"{run['p99_ms']:.2f} ms, {run['errors']} errors", "met" if meets(run) else "not met")


def ratio_verdict(summary: list[dict]) -> TargetVerdict:
    name = f"full path at c=16 ≥ {RATIO_AT_16:.0%} of direct Triton"
    row = _row(summary, FULL_PATH, 16)
    if row is None:
        return TargetVerdict(name, "no c=16 run", "not measured")
    ceiling = _row(summary, CEILING, 16)
    errors = _errors(row, *([ceiling] if ceiling else []))
    rounds = "/".join(f"{r * 100:.0f}" for r in row["ratio_by_round"])
    return TargetVerdict(name, f"{row['ratio_to_ceiling']:.0%} (rounds {rounds} %), {errors} errors",
                         "met" if row["ratio_to_ceiling"] >= RATIO_AT_16 and not errors else "not met")


def latency_verdict(summary: list[dict]) -> TargetVerdict:
    name = f"full path p50 at c=1 ≤ direct Triton's + {C1_P50_MARGIN_MS:g} ms"
    full, ceiling = _row(summary, FULL_PATH, 1), _row(summary, CEILING, 1)
    if full is None or ceiling is None:
        return TargetVerdict(name, "no c=1 run", "not measured")
    extra, errors = full["p50_ms"] - ceiling["p50_ms"], _errors(full, ceiling)
    return TargetVerdict(name, f"{full['p50_ms']:.2f} against {ceiling['p50_ms']:.2f} ms ({extra:+.2f}), {errors} errors",
                         "met" if extra <= C1_P50_MARGIN_MS and not errors else "not met")


def batched_verdict(summary: list[dict]) -> TargetVerdict:
    name = f"{BATCH} rows per request ≥ {BATCHED_PREDICTIONS_PER_S:,.0f} predictions/s"
    rows = [r for r in summary if r["target"] == BATCHED]
    if not rows:
        return TargetVerdict(name, f"no {BATCH}-row run", "not measured")
    clean = [r for r in rows if not r["errors"]]
    best = max(clean or rows, key=lambda r: r["predictions_per_s"])
    return TargetVerdict(name, f"{best['predictions_per_s']:,.0f}/s at c={best['connections']}, {best['errors']} errors",
                         "met" if best["predictions_per_s"] >= BATCHED_PREDICTIONS_PER_S and not best["errors"]
                         else "not met")


def peers_verdict(summary: list[dict]) -> TargetVerdict:
    """Routing only against each peer at each concurrency: the peers infer without features, canary or events, so
    that is the row where the gateway does the same work. The issue names each peer at its recommended worker
    setting; peers tuned past it are compared in the measured text, and do not change the verdict."""
    name = "ahead of every peer where it does the same work (routing only)"
    pairs = _against_routing(summary, PEER)
    if not pairs:
        return TargetVerdict(name, "no peer run", "not measured")
    behind = [f"{_label(peer, PEER)} ({_figures(ours, peer)})" for peer, ours in pairs
              if ours["errors"] or (not peer["errors"] and ours["requests_per_s"] <= peer["requests_per_s"])]
    failed_peers = [_label(peer, PEER) for peer, ours in pairs if peer["errors"] and not ours["errors"]]
    if behind:
        measured, verdict = "behind " + "; ".join(behind), "not met"
    elif failed_peers:
        measured, verdict = "no comparison with peers that answered errors: " + ", ".join(failed_peers), "not measured"
    else:
        measured, verdict = f"ahead in all {len(pairs)} comparisons", "met"
    tuned = [f"{_standing(ours, peer)} {_label(peer, TUNED_PEER)} ({_figures(ours, peer)})"
             for peer, ours in _against_routing(summary, TUNED_PEER)]
    if tuned:
        measured += "; not judged, peers tuned past their recommended setting: " + "; ".join(tuned)
    return TargetVerdict(name, measured, verdict)


def _against_routing(summary: list[dict], prefix: str) -> list[tuple[dict, dict]]:
    """Each row of ``prefix`` with routing only's row at its concurrency (rows without one left out)."""
    rows = [(peer, _row(summary, ROUTING_ONLY, peer["connections"]))
            for peer in summary if peer["target"].startswith(f"{prefix} ")]
    return [(peer, ours) for peer, ours in rows if ours is not None]


def _standing(ours: dict, peer: dict) -> str:
    if ours["errors"] or peer["errors"]:
        return "no comparison with"
    return "ahead of" if ours["requests_per_s"] > peer["requests_per_s"] else "behind"


def _label(peer: dict, prefix: str) -> str:
    return f"{peer['target'].removeprefix(f'{prefix} ')} at c={peer['connections']}"


def _figures(ours: dict, peer: dict) -> str:
    return (f"{ours['requests_per_s']:,.0f} against {peer['requests_per_s']:,.0f} req/s"
            + "".join(f", {row['errors']} errors of {whose}" for row, whose in ((ours, "ours"), (peer, "theirs"))
                      if row["errors"]))


def events_verdict(events: dict) -> TargetVerdict:
    name = "event loss under overload counted, not silent"
    return TargetVerdict(name, f"{events['events_dropped']:,.0f} dropped (counted), "
                               f"{events['unaccounted']:,.0f} unaccounted",
                         "met" if events["unaccounted"] == 0 else "not met")


def judge(report: dict) -> list[TargetVerdict]:
    """Every target of issue 8, judged from ``report`` (the benchmark's JSON, before ``targets`` is added)."""
    summary = report["summary"]
    return [open_loop_verdict(report["open_loop"]), ratio_verdict(summary), latency_verdict(summary),
            batched_verdict(summary), peers_verdict(summary), events_verdict(report["events_under_overload"])]


def print_verdicts(verdicts: list[TargetVerdict]) -> None:
    print("\ntargets of issue 8 (from this run alone)")
    for v in verdicts:
        print(f"  {v.verdict:<13} {v.target}: {v.measured}")
