"""The README's first command, end to end: ``mlfleet demo --exit`` on an isolated fleet, from data to a canary
promoted on its own and a drift page."""

from __future__ import annotations

import re
import subprocess


def test_demo_runs_end_to_end_and_exits_zero(fleet_env, mlfleet_command):
    result = subprocess.run(mlfleet_command + ["demo", "--exit", "--requests", "600"], env=fleet_env,
                            check=False, capture_output=True, text=True, timeout=420)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    sent = re.search(r"Sent ([\d,]+) predictions in .*?, (\d+) errors", output)
    assert sent, output[-4000:]
    assert int(sent.group(1).replace(",", "")) == 600
    assert int(sent.group(2)) == 0
    answered = re.search(r"Per version \(as answered\):\s+(.*)", output).group(1)
    counts = {int(v): int(n.replace(",", "")) for v, n in re.findall(r"v(\d+): ([\d,]+)", answered)}
    assert sum(counts.values()) == 600
    assert set(counts) == {1, 2}, "both the stable and the 10 % canary version should have answered"
    assert counts[2] < counts[1]
    monitored = re.search(r"as the monitor counted from the event stream\):\s+(.*)", output)
    assert monitored, "the monitor's counts were not printed"
    monitor_counts = {int(v): int(n.replace(",", "")) for v, n in re.findall(r"v(\d+): ([\d,]+) requests", monitored.group(1))}
    assert monitor_counts == counts, "every prediction event reached the monitor exactly once"

    # the fleet's main job: version 2 rolled out, judged on live traffic and promoted on its own
    verdicts = re.findall(r"rollout    at ([\d.]+) %: (\w+) \(canary ([\d,]+) requests, (\d+) errors", output)
    assert [(step, verdict) for step, verdict, _, _ in verdicts] == [("10", "advance"), ("50", "promote")], output[-3000:]
    assert all(int(n.replace(",", "")) >= 50 and errors == "0" for _, _, n, errors in verdicts)
    promoted = re.search(r"rollout    promoted on its own: v2 is stable \(([\d,]+) predictions answered meanwhile, "
                         r"(\d+) errors\)", output)
    assert promoted and int(promoted.group(2)) == 0, output[-3000:]
    # then the data shifts, and the monitor pages about the features that moved
    paged = re.search(r"drift      paged after [\d.]+ s: critical — fraud v2: data drift in (.*) \(the monitor "
                      r"recommends: (\w+);", output)
    assert paged, output[-3000:]
    moved = set(re.findall(r"[a-z][a-z0-9_]*", paged.group(1)))  # what asked to roll back, then "; less in" the rest
    assert {"amount", "distance_from_home_km"} <= moved and paged.group(2) == "rollback"
    assert "Fleet stopped." in output
