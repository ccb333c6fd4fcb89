"""Alert rules, deduplication with a cooldown, resolution, and the alert history — shared by all replicas.

Rules are pure functions of a version's metrics (:func:`metric_alerts`) or of a drift
report (:func:`drift_alert`). :class:`AlertCenter` fires an alert only when its fingerprint
(rule, model, version, action) is not cooling down — a ``SET NX PX cooldown`` in Redis, so
several monitor replicas that see the same breach page once — then records it in the
history and hands it to the sinks (which never block the caller). The cooldown and the
history entry are written by one script: an alert whose entry could not be written leaves no
cooldown behind to silence it when it fires again.

A fired alert stays active until checks have found its rule no longer broken for ``resolve_after_s``
(:meth:`AlertCenter.resolve_cleared`; Prometheus's ``keep_firing_for``), so a metric hovering around its threshold
is one incident, not a page at every crossing; an alert whose version is gone resolves at once
(:meth:`AlertCenter.resolve_gone`). It is resolved once (whichever replica gets there first), recorded, sent as
``resolved`` with its ``endsAt``, and its cooldown lifted, so a new breach pages at once. While it stays active the
cooldown only spaces out reminders, which keep the incident's ``started_at``; a breach while it is clearing starts
the hold again.

Keys: ``mlfleet:monitor:alerts`` (list, newest first, capped), ``mlfleet:monitor:alert:cooldown:{fp}``,
``mlfleet:monitor:alerts:active`` (hash, fingerprint → the incident's first alert), ``mlfleet:monitor:alerts:clearing``
(hash, fingerprint → when checks first found an active alert's rule clear).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence

import orjson
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field

from services.monitor.drift import SCORE_FEATURE, FeatureDrift
from services.monitor.schemas import AlertPublic, DriftReport, VersionMetrics
from services.monitor.store import PREFIX

logger = logging.getLogger("mlfleet.monitor.alerts")

HISTORY_KEY = f"{PREFIX}:alerts"

_FIRE_ONCE = """
if (redis.call('HGET', KEYS[3], ARGV[5]) or '') ~= ARGV[6] then return -1 end
redis.call('HDEL', KEYS[4], ARGV[5])
local cooling = ARGV[2] ~= '0'
if cooling and not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('HSETNX', KEYS[3], ARGV[5], ARGV[3])
  return 0
end
local pushed = redis.pcall('LPUSH', KEYS[2], ARGV[3])
if type(pushed) == 'table' and pushed.err then
  if cooling then redis.call('DEL', KEYS[1]) end
  return redis.error_reply(pushed.err)
end
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
redis.call('HSETNX', KEYS[3], ARGV[5], ARGV[3])
return 1
"""
"""KEYS[1] the cooldown, KEYS[2] the history, KEYS[3] the active alerts, KEYS[4] the clearing ones; ARGV[1] the
alert's id, ARGV[2] the cooldown in ms (0: none), ARGV[3] the alert, ARGV[4] the history's length, ARGV[5] its
fingerprint, ARGV[6] its active entry as the caller read it ('' for none). Any breach ends the alert's hold before
resolution. -1 when that entry changed since (read it again); 0 when cooling down (an incident with no active entry,
paged before alerts were resolved, is adopted as active then, so it resolves); an error (and no cooldown) when the
history refused the entry."""

_RESOLVE_ONCE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[4] then return 0 end
if tonumber(ARGV[6]) > 0 then
  local since = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '')
  if not since then
    redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
    return 2
  end
  if tonumber(ARGV[5]) - since < tonumber(ARGV[6]) then return 2 end
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('LPUSH', KEYS[3], ARGV[2])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
return 1
"""
"""KEYS[1] the active alerts, KEYS[2] the cooldown, KEYS[3] the history, KEYS[4] the clearing alerts; ARGV[1] the
fingerprint, ARGV[2] the resolved alert, ARGV[3] the history's length, ARGV[4] the active entry as the caller read it,
ARGV[5] the check's time (Unix seconds), ARGV[6] the hold (seconds; 0: none). 1 when resolved; 2 when still held (the
first clear check starts the hold); 0 when the entry is gone or changed: another replica resolved it first, or a new
incident began."""
ACTIVE_KEY = f"{PREFIX}:alerts:active"
CLEARING_KEY = f"{PREFIX}:alerts:clearing"
FIRE_ATTEMPTS = 5
"""Reads of an incident's active entry before firing gives up (each retry means another replica changed it)."""
METRIC_RULES = frozenset({"accuracy", "error_rate", "latency"})


class AlertRules(BaseModel):
    """Thresholds of the metric rules (defaults from the case study's gates)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(default=300.0, gt=0, description="Window the metric rules look at.")
    min_accuracy: float = Field(default=0.85, ge=0, le=1, description="Live accuracy below this is critical.")
    min_labelled: int = Field(default=50, ge=1, description="Labels needed before accuracy is judged.")
    max_error_rate: float = Field(default=0.05, ge=0, le=1, description="Error rate above this is critical.")
    max_p99_ms: float = Field(default=100.0, gt=0, description="p99 latency above this is a warning.")
    min_requests: int = Field(default=50, ge=1, description="Requests needed before error rate and latency are judged.")


def fingerprint(rule: str, model: str, version: int | None, action: str | None) -> str:
    return hashlib.sha256(f"{rule}|{model}|{version}|{action}".encode()).hexdigest()[:16]


def _alert(rule: str, severity: str, model: str, version: int | None, summary: str, description: str, *,
           now: float, action: str | None = None, **extra) -> AlertPublic:
    return AlertPublic(id=uuid.uuid4().hex, fingerprint=fingerprint(rule, model, version, action), rule=rule,
                       severity=severity, action=action, model=model, version=version, summary=summary,
                       description=description, fired_at=now, **extra)


def metric_alerts(model: str, metrics: VersionMetrics, rules: AlertRules, *, window: tuple[float, float],
                  now: float) -> list[AlertPublic]:
    """Accuracy drop, error rate and latency breaches of one version over a window."""
    alerts = []
    common = {"now": now, "window_start": window[0], "window_end": window[1]}
    name = f"{model} v{metrics.version}"
    q = metrics.quality
    if q is not None and q.labelled >= rules.min_labelled and q.accuracy < rules.min_accuracy:
        alerts.append(_alert(
            "accuracy", "critical", model, metrics.version, f"{name}: live accuracy {q.accuracy:.1%}",
            f"Accuracy over {q.labelled} labelled predictions fell below {rules.min_accuracy:.0%}; retrain.",
            action="retrain", values={"accuracy": q.accuracy, "labelled": q.labelled}, **common))
    if metrics.requests >= rules.min_requests and metrics.error_rate > rules.max_error_rate:
        alerts.append(_alert(
            "error_rate", "critical", model, metrics.version, f"{name}: error rate {metrics.error_rate:.1%}",
            f"{metrics.errors} of {metrics.requests} requests failed (limit {rules.max_error_rate:.0%}).",
            values={"error_rate": metrics.error_rate, "requests": metrics.requests}, **common))
    latency = metrics.latency_ms
    if latency is not None and metrics.requests >= rules.min_requests and latency.p99 > rules.max_p99_ms:
        alerts.append(_alert(
            "latency", "warning", model, metrics.version, f"{name}: p99 latency {latency.p99:.1f} ms",
            f"p99 latency is above {rules.max_p99_ms:.0f} ms.", values={"p99_ms": latency.p99}, **common))
    return alerts


def judged_fingerprints(model: str, metrics: VersionMetrics, rules: AlertRules) -> set[str]:
    """The metric rules a version's window judged, broken or not: with enough requests (or labels) to judge, or
    none at all (a version that serves nothing breaks no rule). Too few to judge is neither breach nor all-clear: an
    active alert stays active, so a rule whose evidence hovers around its minimum does not fire and resolve by turns."""
    judged = set()
    if metrics.quality is None or metrics.quality.labelled >= rules.min_labelled:
        judged.add(fingerprint("accuracy", model, metrics.version, "retrain"))
    if metrics.requests == 0 or metrics.requests >= rules.min_requests:
        judged |= {fingerprint("error_rate", model, metrics.version, None),
                   fingerprint("latency", model, metrics.version, None)}
    return judged


def drift_alert(report: DriftReport, *, now: float) -> AlertPublic | None:
    """A drift alert when the window's verdict asks to retrain or roll back, named for what asked for that action:
    the input features, the prediction scores, or both. The statistics of everything that moved are in its values."""
    if report.verdict not in ("retrain", "rollback"):
        return None
    moved = [f for f in report.features + ([report.scores] if report.scores else []) if f.action != "none"]
    causes = ", ".join(_drift_subject(f) for f in moved if f.action == report.verdict)
    lesser = ", ".join(_drift_subject(f) for f in moved if f.action != report.verdict)
    values = {f"{statistic}:{f.feature}": value for f in moved
              for statistic, value in (("ks", f.ks), ("js", f.js), ("psi", f.psi)) if value is not None}
    return _alert(
        "drift", "critical" if report.verdict == "rollback" else "warning", report.model, report.version,
        f"{report.model} v{report.version}: data drift in {causes}" + (f"; less in {lesser}" if lesser else ""),
        f"Over the last {report.window.n} sampled instances, {causes} moved away from the training data "
        f"(KS > {report.thresholds.ks} asks to retrain, PSI > {report.thresholds.psi} to roll back)"
        + (f"; {lesser} moved less (asks to retrain)." if lesser else "."),
        now=now, action=report.verdict, values=values, features=report.drifted_features,
        window_start=report.window.start, window_end=report.window.end)


def _drift_subject(result: FeatureDrift) -> str:
    return "the prediction scores" if result.feature == SCORE_FEATURE else result.feature


class AlertCenter:
    def __init__(self, redis: aioredis.Redis, *, cooldown_s: float, history_max: int,
                 dispatch: Callable[[AlertPublic], None], on_fired: Callable[[AlertPublic, bool], None],
                 on_resolved: Callable[[AlertPublic], None] = lambda alert: None, resolve_after_s: float = 0.0) -> None:
        self._redis = redis
        self._cooldown_s = cooldown_s
        self._resolve_after_s = resolve_after_s
        self._history_max = history_max
        self._dispatch = dispatch
        self._on_fired = on_fired
        self._on_resolved = on_resolved
        self._fire_once = redis.register_script(_FIRE_ONCE)
        self._resolve_once = redis.register_script(_RESOLVE_ONCE)

    async def fire(self, alert: AlertPublic) -> bool:
        """Record and send ``alert`` unless the same fingerprint fired within the cooldown; an alert of an incident
        still active keeps the incident's ``started_at``."""
        cooldown_ms = max(int(self._cooldown_s * 1000), 1) if self._cooldown_s > 0 else 0
        for _ in range(FIRE_ATTEMPTS):
            ongoing = await self._redis.hget(ACTIVE_KEY, alert.fingerprint)
            started_at = AlertPublic.model_validate_json(ongoing).started_at if ongoing else None
            alert = alert.model_copy(update={"started_at": started_at or alert.fired_at})
            fresh = await self._fire_once(keys=[self._cooldown_key(alert.fingerprint), HISTORY_KEY, ACTIVE_KEY,
                                                CLEARING_KEY],
                                          args=[alert.id, cooldown_ms, alert.model_dump_json(), self._history_max,
                                                alert.fingerprint, ongoing or b""])
            if fresh != -1:
                break
        else:
            raise RuntimeError(f"alert {alert.fingerprint} changed under {FIRE_ATTEMPTS} attempts to fire it")
        if not fresh:
            self._on_fired(alert, False)
            return False
        logger.warning("alert %s: %s", alert.rule, alert.summary)
        self._on_fired(alert, True)
        self._dispatch(alert)
        return True

    async def fire_all(self, alerts: Sequence[AlertPublic]) -> int:
        return sum([await self.fire(alert) for alert in alerts])

    async def resolve_cleared(self, clear: Callable[[AlertPublic], bool], *, now: float) -> list[AlertPublic]:
        """Resolve the active alerts whose rule a check at ``now`` judged and found no longer broken (``clear``), once
        checks have found it so for ``resolve_after_s``; the resolutions this replica made."""
        return await self._resolve(clear, now=now, hold_s=self._resolve_after_s)

    async def resolve_gone(self, gone: Callable[[AlertPublic], bool], *, now: float) -> list[AlertPublic]:
        """Resolve at once the active alerts whose version is gone (``gone``: no longer listed), with no hold: nothing
        of it is left to breach the rule again."""
        return await self._resolve(gone, now=now, hold_s=0.0)

    async def _resolve(self, predicate: Callable[[AlertPublic], bool], *, now: float,
                       hold_s: float) -> list[AlertPublic]:
        """Resolve the active alerts ``predicate`` picks, unless they began after ``now`` (another replica's newer
        check): recorded, sent as ``resolved``, their cooldown lifted."""
        resolved = []
        for raw in (await self._redis.hgetall(ACTIVE_KEY)).values():
            active = AlertPublic.model_validate_json(raw)
            if (active.started_at or active.fired_at) > now or not predicate(active):
                continue
            resolution = active.model_copy(update={"id": uuid.uuid4().hex, "status": "resolved", "resolved_at": now})
            outcome = await self._resolve_once(
                keys=[ACTIVE_KEY, self._cooldown_key(active.fingerprint), HISTORY_KEY, CLEARING_KEY],
                args=[active.fingerprint, resolution.model_dump_json(), self._history_max, raw, repr(now), hold_s])
            if outcome == 1:
                logger.info("alert %s resolved: %s", active.rule, active.summary)
                self._on_resolved(resolution)
                self._dispatch(resolution)
                resolved.append(resolution)
        return resolved

    @staticmethod
    def _cooldown_key(fingerprint: str) -> str:
        return f"{PREFIX}:alert:cooldown:{fingerprint}"

    async def active(self, *, model: str | None = None, rule: str | None = None,
                     limit: int = 100) -> list[AlertPublic]:
        """The incidents firing now, each as it began, newest first."""
        alerts = [AlertPublic.model_validate_json(raw) for raw in (await self._redis.hgetall(ACTIVE_KEY)).values()]
        return sorted(_matching(alerts, model, rule), key=lambda a: a.started_at or a.fired_at, reverse=True)[:limit]

    async def history(self, *, model: str | None = None, rule: str | None = None, limit: int = 100) -> list[AlertPublic]:
        alerts = [AlertPublic.model_validate(orjson.loads(raw)) for raw in await self._redis.lrange(HISTORY_KEY, 0, -1)]
        return _matching(alerts, model, rule)[:limit]


def _matching(alerts: list[AlertPublic], model: str | None, rule: str | None) -> list[AlertPublic]:
    return [a for a in alerts if (model is None or a.model == model) and (rule is None or a.rule == rule)]
