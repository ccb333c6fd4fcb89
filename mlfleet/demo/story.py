"""The demo's second half, the fleet's main job on live traffic: version 2 rolled out as a canary that the registry
judges and promotes (or rolls back) on its own, then the data shifting until the monitor pages someone."""

from __future__ import annotations

import asyncio
import threading
import time
from types import TracebackType

from mlfleet.client import Fleet
from mlfleet.client import models as m
from mlfleet.demo.data import generate_dataset
from mlfleet.demo.run import MODEL, TrafficSummary, fleet_client, sample_instances, send_traffic
from mlfleet.fleet import FleetConfig

ROLLOUT = {"steps": [10.0, 50.0], "interval_s": 3.0, "min_requests": 50}
"""Short steps for a demo: 10 %, then 50 %, each judged on 3 s of traffic; passing 50 % promotes."""
ROLLOUT_TIMEOUT_S = 120.0
DRIFT_REQUESTS = 3_000
"""Enough shifted requests to fill the monitor's drift window (the last 1,000 sampled instances)."""
DRIFT_TIMEOUT_S = 60.0
COOLDOWN_EVIDENCE_S = 15.0
"""A drifted window this long without a new page (the monitor checks every 10 s): an earlier page's cooldown."""


class SteadyTraffic:
    """Predictions sent from a background thread, a few at a time, until the block ends: traffic for a rollout to
    judge."""

    def __init__(self, url: str, instances: list[dict], *, concurrency: int = 4) -> None:
        self._url, self._instances, self._concurrency = url, instances, concurrency
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-steady-traffic", daemon=True)
        self.summary = TrafficSummary()
        self.error: Exception | None = None

    def __enter__(self) -> SteadyTraffic:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def wait_for(self, requests: int, timeout_s: float = 30.0) -> None:
        """Until ``requests`` have been answered; raises what stopped the traffic, or ``TimeoutError``."""
        deadline = time.monotonic() + timeout_s
        while self.summary.requests < requests:
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.summary.requests} of {requests} requests answered in {timeout_s:g} s")
            time.sleep(0.1)

    def _run(self) -> None:
        chunk = 64  # the summary grows a chunk at a time
        offset = 0
        try:
            while not self._stop.is_set():
                part = self._instances[offset:offset + chunk] or self._instances[:chunk]
                offset = (offset + chunk) % len(self._instances)
                self.summary.add(asyncio.run(send_traffic(self._url, part, concurrency=self._concurrency)))
        except Exception as exc:  # reported by wait_for and after the rollout
            self.error = exc


def steps_line(step: m.RolloutStepPublic) -> str:
    def numbers(side: dict) -> str:
        p99 = f", p99 {side['p99_ms']:.1f} ms" if "p99_ms" in side else ""
        return f"{side.get('requests', 0):,} requests, {side.get('errors', 0)} errors{p99}"

    return (f"rollout    at {step.canary_percent:g} %: {step.verdict} (canary {numbers(step.canary)}; "
            f"stable {numbers(step.stable)})")


def roll_out(config: FleetConfig, candidate: int, instances: list[dict], echo) -> m.RolloutPublic:
    """Roll ``candidate`` out under steady traffic and report each verdict; the rollout as it ended."""
    with fleet_client(config) as fleet, SteadyTraffic(config.url("gateway"), instances) as traffic:
        traffic.wait_for(50)
        rollout = fleet.start_rollout(MODEL, candidate, **ROLLOUT)
        echo(f"rollout    #{rollout.id}: v{candidate} against v{rollout.baseline} as a canary at "
             f"{' → '.join(f'{s:g}' for s in rollout.steps)} %, each step judged by the registry after "
             f"{rollout.interval_s:g} s on the monitor's live numbers (error rate, p99 latency, accuracy against "
             f"stable; counted in 10 s buckets, so a step this short also sees the traffic just before it)")
        rollout = follow(fleet, rollout, echo)
    answered = f"{traffic.summary.requests:,} predictions answered meanwhile, {traffic.summary.errors} errors"
    if traffic.error is not None:
        answered += f"; the traffic stopped: {traffic.error!r}"
    if rollout.state is m.RolloutState.promoted:
        echo(f"rollout    promoted on its own: v{rollout.candidate} is stable ({answered})")
    else:
        echo(f"rollout    {rollout.state.value.replace('_', ' ')}: {rollout.reason} ({answered})")
    return rollout


def follow(fleet: Fleet, rollout: m.RolloutPublic, echo) -> m.RolloutPublic:
    """Print each judged step until the rollout ends; abort it after ``ROLLOUT_TIMEOUT_S``."""
    deadline, shown = time.monotonic() + ROLLOUT_TIMEOUT_S, 0
    while True:
        rollout = fleet.get_rollout(MODEL, rollout.id)
        judged = [step for step in rollout.history if step.verdict != "hold"]
        for step in judged[shown:]:
            echo(steps_line(step))
        shown = len(judged)
        if rollout.state.finished:
            return rollout
        if time.monotonic() > deadline:
            return fleet.abort_rollout(MODEL, rollout.id, reason=f"the demo waited {ROLLOUT_TIMEOUT_S:g} s")
        time.sleep(0.3)


def page_on_drift(config: FleetConfig, *, seed: int, echo) -> m.AlertPublic | None:
    """Send the post-2020 shifted traffic and wait for the monitor's drift alert on the version serving it."""
    shifted = generate_dataset(seed=seed, shift=True, n_transactions=DRIFT_REQUESTS)
    instances = sample_instances(shifted, DRIFT_REQUESTS, seed)
    with fleet_client(config) as fleet:
        stable = fleet.get_traffic(MODEL).stable
        echo(f"drift      sending {DRIFT_REQUESTS:,} predictions from the post-2020 distribution (shopping moved "
             f"online and close to home) to the stable v{stable}…")
        started = time.time()
        summary = asyncio.run(send_traffic(config.url("gateway"), instances, concurrency=8))
        echo(f"drift      {summary.requests:,} answered, {summary.errors} errors; the monitor compares the newest "
             f"1,000 sampled instances with v{stable}'s training data every 10 s")
        deadline, drifted_since = time.monotonic() + DRIFT_TIMEOUT_S, None
        while time.monotonic() < deadline:
            alerts = [a for a in fleet.alerts(model=MODEL, rule="drift").data
                      if a.version == stable and a.status == "firing"]
            report = fleet.drift(MODEL, version=stable)
            judged = report.verdict in ("retrain", "rollback") and (report.window.start or 0) >= started
            # The page for the shifted traffic: one sent since it began, recommending what the monitor concludes on
            # a window of it alone. A check that ran while it was being sent judged a mix of old and new instances
            # and may have paged a milder verdict first; the page for the full shift then follows it.
            alert = next((a for a in alerts if judged and a.action == report.verdict and a.fired_at >= started), None)
            if alert is not None:
                echo(f"drift      paged after {alert.fired_at - started:.1f} s: {alert.severity} — {alert.summary} "
                     f"(the monitor recommends: {alert.action}; it pages, it does not change the traffic)")
                echo(f"           alerts go to Alertmanager, Slack or PagerDuty through "
                     f"MLFLEET_MONITOR_ALERT_WEBHOOK_URLS; every alert: {config.url('monitor')}/v1/alerts")
                return alert
            drifted_since = (drifted_since or time.monotonic()) if judged else None
            earlier = next((a for a in alerts if a.action == report.verdict), None)
            if earlier and drifted_since is not None and time.monotonic() - drifted_since > COOLDOWN_EVIDENCE_S:
                echo(f"drift      {', '.join(report.drifted_features)} moved (the monitor recommends: "
                     f"{report.verdict}); no new page: a drift page for {MODEL} v{stable} already went out "
                     f"{time.time() - earlier.fired_at:,.0f} s ago (an earlier run, or another fleet on this "
                     f"Redis), and the same page is not sent again within MLFLEET_MONITOR_ALERT_COOLDOWN_S")
                return None
            time.sleep(0.5)
    echo(f"drift      no alert within {DRIFT_TIMEOUT_S:g} s; see {config.url('monitor')}/dashboard")
    return None
