"""Background checks: every version's drift window, and the metric alert rules.

Two loops owned by the app's lifespan. Each pass reads shared state from Redis, so any
number of replicas may run them; windows are recorded and alerts fired once (see
:mod:`reports` and :mod:`alerts`). A failing pass is logged and the next one runs on time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from services.common.errors import MlfleetError
from services.monitor import queries
from services.monitor.alerts import METRIC_RULES, AlertCenter, drift_alert, judged_fingerprints, metric_alerts
from services.monitor.cancellation import stop_if_cancelled
from services.monitor.feedback import FeedbackStore
from services.monitor.reports import JUDGED, DriftReporter, WindowSpec, gauge_values
from services.monitor.schemas import DriftReport, Quality
from services.monitor.settings import MonitorSettings
from services.monitor.store import AggregateStore
from services.monitor.telemetry import MonitorMetrics

logger = logging.getLogger("mlfleet.monitor.watcher")

VERDICT_GAUGE = {"ok": 0, "retrain": 1, "rollback": 2}


def default_window(settings: MonitorSettings) -> WindowSpec:
    return WindowSpec(settings.drift_window, settings.drift_window_size, settings.drift_window_s)


class Watcher:
    def __init__(self, settings: MonitorSettings, store: AggregateStore, reporter: DriftReporter,
                 feedback: FeedbackStore, alerts: AlertCenter, metrics: MonitorMetrics) -> None:
        self._settings = settings
        self._store = store
        self._reporter = reporter
        self._feedback = feedback
        self._alerts = alerts
        self._metrics = metrics
        self.drift_passes = 0

    async def run_drift(self) -> None:
        await self._every(self._settings.drift_interval_s, self.check_drift, "drift")

    async def run_rules(self) -> None:
        await self._every(self._settings.alert_interval_s, self.check_rules, "alert rules")

    async def _every(self, interval_s: float, check: Callable[[], Awaitable[None]], what: str) -> None:
        while True:
            started = time.monotonic()
            try:
                await check()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                logger.warning("%s check skipped, redis unavailable: %s", what, exc)
            except Exception:
                logger.exception("%s check failed", what)
            stop_if_cancelled()
            await asyncio.sleep(max(interval_s - (time.monotonic() - started), 0.0))

    async def _versions(self) -> list[tuple[str, int]]:
        return [(model, version) for model in await self._store.models()
                for version in await self._store.versions(model) if version is not None]

    async def check_drift(self) -> None:
        """Judge each version's current window; record it and alert once per new window."""
        spec = default_window(self._settings)
        reports: list[DriftReport] = []
        listed = await self._versions()
        for model, version in listed:
            report, window = await self._reporter.report(model, version, spec, self._settings.drift_thresholds(model))
            reports.append(report)
            if await self._reporter.record(report, window):
                alert = drift_alert(report, now=time.time())
                if alert is not None:
                    await self._alerts.fire(alert)
                firing = alert.fingerprint if alert is not None else None
                await self._alerts.resolve_cleared(  # a new window judged: drift alerts it no longer bears out
                    lambda a, model=model, version=version, firing=firing: (
                        a.rule == "drift" and (a.model, a.version) == (model, version) and a.fingerprint != firing),
                    now=time.time())
        await self._alerts.resolve_gone(  # versions the monitor no longer lists (their events expired)
            lambda a: a.rule == "drift" and (a.model, a.version) not in listed, now=time.time())
        self._export_drift(reports)
        self.drift_passes += 1

    def _export_drift(self, reports: list[DriftReport]) -> None:
        """Replace the drift gauges at once: versions no longer listed drop out, and a window too small to judge
        exports its verdict (-1) and size but no statistics (a PSI over 20 instances is noise, not drift)."""
        for gauge in (self._metrics.drift_verdict, self._metrics.drift_window, self._metrics.drift):
            gauge.clear()
        for report in reports:
            labels = {"model": report.model, "version": str(report.version)}
            self._metrics.drift_verdict.labels(**labels).set(VERDICT_GAUGE.get(report.verdict, -1))
            self._metrics.drift_window.labels(**labels).set(report.window.n)
            if report.verdict in JUDGED:
                for (feature, statistic), value in gauge_values(report).items():
                    self._metrics.drift.labels(**labels, feature=feature, statistic=statistic).set(value)

    async def check_rules(self) -> None:
        """Accuracy, error-rate and latency rules over each model's recent window; live-accuracy gauges."""
        now = time.time()
        quality: dict[tuple[str, str], Quality] = {}
        clear: set[str] = set()
        listed: set[tuple[str, int | None]] = set()
        checked: set[str] = set()
        for model in await self._store.models():
            rules = self._settings.rules(model)
            try:
                metrics = await queries.model_metrics(self._store, model, window_s=rules.window_s, start=None,
                                                      end=None, now=now, retention_s=self._settings.bucket_ttl_s,
                                                      feedback=self._feedback)
            except MlfleetError as exc:  # e.g. a model's rules asking for a window longer than the data is kept
                logger.warning("rules of %s not checked: %s", model, exc.detail)
                continue
            checked.add(model)
            for version in metrics.versions:
                listed.add((model, version.version))
                if version.version is not None and version.quality is not None:
                    quality[(model, str(version.version))] = version.quality
                alerts = metric_alerts(model, version, rules, window=(now - rules.window_s, now), now=now)
                clear |= judged_fingerprints(model, version, rules) - {alert.fingerprint for alert in alerts}
                await self._alerts.fire_all(alerts)
        await self._alerts.resolve_gone(
            lambda a: a.rule in METRIC_RULES and a.model in checked and (a.model, a.version) not in listed, now=now)
        await self._alerts.resolve_cleared(
            lambda a: a.rule in METRIC_RULES and a.model in checked and a.fingerprint in clear, now=now)
        self._export_quality(quality)

    def _export_quality(self, quality: dict[tuple[str, str], Quality]) -> None:
        """Replace the live-accuracy gauges at once, so versions without labels in the window drop out."""
        self._metrics.live_accuracy.clear()
        self._metrics.live_labelled.clear()
        for (model, version), q in quality.items():
            self._metrics.live_accuracy.labels(model=model, version=version).set(q.accuracy)
            self._metrics.live_labelled.labels(model=model, version=version).set(q.labelled)
