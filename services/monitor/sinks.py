"""Where alerts go: webhooks, delivered in the background with retries and backoff.

Two body shapes: the generic webhook gets what Alertmanager sends its receivers (version 4),
so anything that takes Alertmanager's webhooks takes ours; the retraining trigger gets a
run request shaped like the Kubeflow Pipelines v2 runs API (``POST /apis/v2beta1/runs``):
pipeline reference, run name and parameters, including the data window to train on.

Each sink has a bounded queue and one worker: :meth:`SinkDispatcher.submit` never waits, a
full queue drops the delivery (counted), and a failing receiver is retried with
exponential backoff up to ``max_attempts`` while monitoring goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import redis.asyncio as aioredis

from services.monitor.schemas import AlertPublic
from services.monitor.store import PREFIX

logger = logging.getLogger("mlfleet.monitor.sinks")

ZERO_TIME = "0001-01-01T00:00:00Z"
RETRAIN_RULES = frozenset({"drift", "accuracy"})


def rfc3339(unix_s: float | None) -> str:
    if unix_s is None:
        return ZERO_TIME
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alertmanager_body(alert: AlertPublic, *, monitor_url: str) -> dict[str, Any]:
    """An Alertmanager webhook payload (version 4) holding one alert, firing or resolved."""
    labels = {"alertname": f"Mlfleet{alert.rule.title().replace('_', '')}", "severity": alert.severity,
              "model": alert.model, "version": str(alert.version) if alert.version is not None else "none",
              "rule": alert.rule, "service": "mlfleet-monitor"}
    if alert.action:
        labels["action"] = alert.action
    annotations = {"summary": alert.summary, "description": alert.description}
    if alert.features:
        annotations["drifted_features"] = ",".join(alert.features)
    link = f"{monitor_url}/dashboard"
    return {
        "version": "4",
        "groupKey": f"{{}}:{{alertname=\"{labels['alertname']}\", model=\"{alert.model}\"}}",
        "truncatedAlerts": 0,
        "status": alert.status,
        "receiver": "mlfleet",
        "groupLabels": {"alertname": labels["alertname"], "model": alert.model},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": monitor_url,
        "alerts": [{
            "status": alert.status, "labels": labels, "annotations": annotations,
            "startsAt": rfc3339(alert.started_at or alert.fired_at), "endsAt": rfc3339(alert.resolved_at),
            "generatorURL": link, "fingerprint": alert.fingerprint,
        }],
    }


@dataclass(frozen=True)
class PipelineRef:
    pipeline_id: str
    pipeline_version_id: str | None = None
    experiment_id: str | None = None


def retrain_body(alert: AlertPublic, pipeline: PipelineRef) -> dict[str, Any]:
    """A Kubeflow Pipelines v2 ``Run`` to create: retrain ``alert.model`` on the drifted window's data."""
    stamp = datetime.fromtimestamp(alert.fired_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    reference: dict[str, Any] = {"pipeline_id": pipeline.pipeline_id}
    if pipeline.pipeline_version_id:
        reference["pipeline_version_id"] = pipeline.pipeline_version_id
    body: dict[str, Any] = {
        "display_name": f"retrain-{alert.model}-v{alert.version}-{stamp}",
        "description": alert.summary,
        "pipeline_version_reference": reference,
        "runtime_config": {"parameters": {
            "model": alert.model,
            "base_version": alert.version,
            "reason": alert.rule,
            "action": alert.action,
            "drifted_features": alert.features,
            "data_window_start": rfc3339(alert.window_start),
            "data_window_end": rfc3339(alert.window_end),
            "alert_fingerprint": alert.fingerprint,
        }},
    }
    if pipeline.experiment_id:
        body["experiment_id"] = pipeline.experiment_id
    return body


class OncePerModel:
    """Admits one alert per model every ``interval_s``, across monitor replicas (a ``SET NX PX`` per model): a
    retraining run is expensive, and a drift alert's reminders (every cooldown) or several versions drifting at once
    would each start one. A slot whose alert was not delivered is given back (:meth:`release`): a run that never
    started must not hold off the next alert's for the whole interval."""

    def __init__(self, redis: aioredis.Redis, interval_s: float) -> None:
        self._redis = redis
        self._interval_s = interval_s
        self._release_own = redis.register_script(RELEASE_OWN_SLOT)

    def _key(self, alert: AlertPublic) -> str:
        return f"{PREFIX}:retrain:last:{alert.model}"

    async def admits(self, alert: AlertPublic) -> bool:
        if self._interval_s <= 0:
            return True
        return bool(await self._redis.set(self._key(alert), alert.id, nx=True,
                                          px=max(int(self._interval_s * 1000), 1)))

    async def release(self, alert: AlertPublic) -> None:
        """Free the model's slot if ``alert`` still holds it (not one another replica took since)."""
        if self._interval_s > 0:
            await self._release_own(keys=[self._key(alert)], args=[alert.id])


RELEASE_TIMEOUT_S = 2.0
"""Bound of giving a slot back (at shutdown too): past it the slot expires with its interval."""

RELEASE_OWN_SLOT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""``KEYS[1]``: a model's retraining slot; ``ARGV[1]``: the alert that should hold it."""


class Gate(Protocol):
    """Asked just before a sink delivers an alert (it may consult Redis); told when an admitted alert was not
    delivered after all."""

    async def admits(self, alert: AlertPublic) -> bool: ...

    async def release(self, alert: AlertPublic) -> None: ...


@dataclass(frozen=True)
class Sink:
    name: str
    url: str
    body: Callable[[AlertPublic], dict[str, Any]]
    accepts: Callable[[AlertPublic], bool] = lambda alert: True
    gate: Gate | None = None
    """``admits`` ``False`` skips the alert, counted ``suppressed``."""


@dataclass
class Delivery:
    """Where one alert's delivery stands, read when it is cut short: whether any attempt may have reached the
    receiver's handler (one is being sent now, or one failed after its request went out)."""

    sending: bool = False
    maybe_received: bool = False

    @property
    def may_have_arrived(self) -> bool:
        return self.sending or self.maybe_received


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    initial_s: float
    max_s: float

    def delay(self, attempt: int) -> float:
        """Pause after failed attempt number ``attempt`` (1-based)."""
        return min(self.initial_s * 2 ** (attempt - 1), self.max_s)


class SinkDispatcher:
    def __init__(self, sinks: list[Sink], *, http: httpx.AsyncClient, retry: RetryPolicy, queue_size: int,
                 on_outcome: Callable[[str, str], None]) -> None:
        self._sinks = sinks
        self._http = http
        self._retry = retry
        self._queues = {sink.name: asyncio.Queue[AlertPublic](maxsize=queue_size) for sink in sinks}
        self._on_outcome = on_outcome
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work(sink), name=f"sink-{sink.name}") for sink in self._sinks]

    async def stop(self) -> None:
        """Stop delivering; an alert being delivered or still queued is counted ``dropped`` (and logged). An alert
        cut short before any attempt could have reached its receiver gives its gate's slot back (a retraining run
        that never started must not hold off the next one for the whole interval); one cut short mid-request keeps
        it, as a delivery that may have arrived does."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sink in self._sinks:
            queue, left = self._queues[sink.name], 0
            while not queue.empty():
                queue.get_nowait()
                left += 1
                self._on_outcome(sink.name, "dropped")
            if left:
                logger.error("sink %s: %d queued alerts dropped at shutdown", sink.name, left)

    def submit(self, alert: AlertPublic) -> None:
        """Queue ``alert`` for every sink that takes it; never blocks."""
        for sink in self._sinks:
            if not sink.accepts(alert):
                continue
            try:
                self._queues[sink.name].put_nowait(alert)
            except asyncio.QueueFull:
                logger.error("sink %s queue full; alert %s dropped", sink.name, alert.id)
                self._on_outcome(sink.name, "dropped")

    async def _work(self, sink: Sink) -> None:
        queue = self._queues[sink.name]
        while True:
            alert = await queue.get()
            admitted, delivered, delivery = False, False, Delivery()
            try:
                if sink.gate is not None:
                    if not await sink.gate.admits(alert):
                        self._on_outcome(sink.name, "suppressed")
                        continue
                    admitted = True
                delivered = await self._deliver(sink, alert, delivery)
            except asyncio.CancelledError:
                logger.error("sink %s: alert %s dropped at shutdown, mid-delivery", sink.name, alert.id)
                self._on_outcome(sink.name, "dropped")
                if sink.gate is not None and not delivery.may_have_arrived:  # cut short in `admits` too: the slot
                    await self._release(sink, alert)  # may be held, and only this alert's holding is given back
                raise
            except Exception:  # an unusable URL or body: this alert fails, the sink's worker goes on with the next
                logger.exception("sink %s: alert %s could not be sent", sink.name, alert.id)
                self._on_outcome(sink.name, "failed")
            if admitted and not delivered and not delivery.may_have_arrived:  # refused, or failed before sending
                await self._release(sink, alert)

    async def _release(self, sink: Sink, alert: AlertPublic) -> None:
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT_S):
                await sink.gate.release(alert)
        except Exception:  # Redis down or slow: the slot expires with its interval
            logger.exception("sink %s: could not give back the slot of undelivered alert %s", sink.name, alert.id)

    async def _deliver(self, sink: Sink, alert: AlertPublic, delivery: Delivery) -> bool:
        """Whether ``alert`` was delivered, retrying as the policy says. When it was not, ``delivery`` says whether an
        attempt may still have reached the receiver's handler (a timeout or a broken answer after the request went
        out: a run may have started) or none can have (refused with an error status, or never connected); it says
        so too when the delivery is cut short."""
        body = sink.body(alert)
        for attempt in range(1, self._retry.max_attempts + 1):
            delivery.sending = True  # until the attempt ends: cut short mid-request, it may have arrived
            try:
                response = await self._http.post(sink.url, json=body)
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
                delivery.maybe_received |= not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
            else:
                if response.status_code < 300:
                    self._on_outcome(sink.name, "delivered")
                    return True
                reason = f"HTTP {response.status_code}"
            delivery.sending = False
            if attempt == self._retry.max_attempts:
                break
            delay = self._retry.delay(attempt)
            logger.warning("sink %s: delivery of alert %s failed (%s); retry %d in %.1f s",
                           sink.name, alert.id, reason, attempt, delay)
            self._on_outcome(sink.name, "retried")
            await asyncio.sleep(delay)
        logger.error("sink %s: alert %s dropped after %d attempts", sink.name, alert.id, self._retry.max_attempts)
        self._on_outcome(sink.name, "failed")
        return False


def build_sinks(*, webhook_urls: list[str], retrain_url: str | None, pipeline: PipelineRef,
                monitor_url: str, retrain_gate: Gate | None = None) -> list[Sink]:
    """``retrain_gate``: the retraining sink's rate limit (:class:`OncePerModel`)."""
    sinks = [Sink(f"webhook-{i}", url, lambda alert: alertmanager_body(alert, monitor_url=monitor_url))
             for i, url in enumerate(webhook_urls)]
    if retrain_url:
        sinks.append(Sink("retrain", retrain_url, lambda alert: retrain_body(alert, pipeline),
                          accepts=lambda alert: alert.rule in RETRAIN_RULES and alert.status == "firing",
                          gate=retrain_gate))
    return sinks
