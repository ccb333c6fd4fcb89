"""Rollout events to webhooks, in the background, with retries.

The body is Alertmanager's webhook JSON (``version: "4"``, ``status``, ``alerts[]`` with
``labels``, ``annotations``, ``startsAt``) so an Alertmanager receiver (Slack, PagerDuty,
an on-call relay) reads it as is, plus Flagger's event fields (``name``, ``namespace``,
``phase``, ``metadata``). ``namespace`` carries the model.

:meth:`WebhookNotifier.notify` only queues (never blocks the controller); a background
task posts each event to every URL, retrying failures with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx
from prometheus_client import Counter

logger = logging.getLogger("mlfleet.registry.webhooks")

MAX_BACKOFF_S = 60.0
QUEUE_SIZE = 1000
ZERO_TIME = "0001-01-01T00:00:00Z"


class RolloutEvent(StrEnum):
    started = "started"
    advanced = "advanced"
    promoted = "promoted"
    rolled_back = "rolled_back"
    aborted = "aborted"


# Flagger phase, Alertmanager status and severity of each event: an alert fires while a
# rollout progresses or after it rolled back, and resolves when it ends cleanly.
EVENT_SHAPE: dict[RolloutEvent, tuple[str, str, str]] = {
    RolloutEvent.started: ("Progressing", "firing", "info"),
    RolloutEvent.advanced: ("Progressing", "firing", "info"),
    RolloutEvent.promoted: ("Succeeded", "resolved", "info"),
    RolloutEvent.rolled_back: ("Failed", "firing", "critical"),
    RolloutEvent.aborted: ("Terminated", "resolved", "warning"),
}


@dataclass(frozen=True)
class RolloutNotice:
    event: RolloutEvent
    model: str
    rollout_id: int
    candidate: int
    baseline: int
    canary_percent: float
    actor: str
    reason: str
    started_at: datetime
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def webhook_body(notice: RolloutNotice, *, external_url: str = "") -> dict[str, Any]:
    """The JSON posted for ``notice``."""
    phase, status, severity = EVENT_SHAPE[notice.event]
    labels = {
        "alertname": "MlfleetRollout", "model": notice.model, "rollout_id": str(notice.rollout_id),
        "candidate": str(notice.candidate), "baseline": str(notice.baseline), "event": notice.event.value,
        "severity": severity,
    }
    summary = (f"Rollout {notice.rollout_id} of {notice.model} v{notice.candidate} "
               f"{notice.event.value.replace('_', ' ')} (canary {notice.canary_percent:g} %)")
    annotations = {"summary": summary, "description": notice.reason or summary, "actor": notice.actor}
    alert = {
        "status": status, "labels": labels, "annotations": annotations, "startsAt": _iso(notice.started_at),
        "endsAt": _iso(notice.at) if status == "resolved" else ZERO_TIME,
        "generatorURL": f"{external_url}/v1/models/{notice.model}/rollouts/{notice.rollout_id}" if external_url else "",
        "fingerprint": f"{notice.model}-{notice.rollout_id}",
    }
    return {
        "version": "4",
        "groupKey": f"mlfleet/rollout/{notice.model}/{notice.rollout_id}",
        "status": status,
        "receiver": "mlfleet",
        "groupLabels": {"alertname": "MlfleetRollout", "model": notice.model},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [alert],
        "name": f"{notice.model}-v{notice.candidate}",
        "namespace": notice.model,
        "phase": phase,
        "metadata": {
            "event_type": notice.event.value, "rollout_id": str(notice.rollout_id), "model": notice.model,
            "candidate": str(notice.candidate), "baseline": str(notice.baseline),
            "canary_percent": f"{notice.canary_percent:g}", "actor": notice.actor, "reason": notice.reason,
            "at": _iso(notice.at),
        },
    }


class WebhookNotifier:
    """Delivers each URL's events in the order they happened, one at a time, retrying the oldest before sending the
    next: a receiver sees ``advanced`` before ``promoted`` even when ``advanced`` needed a retry (the two share a
    fingerprint, so the other order would leave its alert firing). Each URL has a queue and a worker of its own, so a
    slow receiver holds up only itself."""

    def __init__(self, urls: Sequence[str], *, timeout_s: float, max_attempts: int, backoff_s: float,
                 deliveries: Counter, external_url: str = "") -> None:
        self.urls = list(urls)
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._deliveries = deliveries
        self._external_url = external_url
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {url: asyncio.Queue(QUEUE_SIZE) for url in self.urls}
        self._http: httpx.AsyncClient | None = None
        self._workers: list[asyncio.Task] = []

    def notify(self, notice: RolloutNotice) -> None:
        """Queue ``notice`` for every URL; dropped (and counted) for a URL whose queue is full."""
        if not self.urls:
            return
        body = webhook_body(notice, external_url=self._external_url)
        for url, queue in self._queues.items():
            try:
                queue.put_nowait(body)
            except asyncio.QueueFull:
                self._deliveries.labels(outcome="dropped").inc()
                logger.warning("webhook queue of %s full; %s of %s rollout %d dropped", url, notice.event,
                               notice.model, notice.rollout_id)

    def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self._timeout_s)
        self._workers = [asyncio.create_task(self._run(url, queue), name=f"registry-webhooks-{index}")
                         for index, (url, queue) in enumerate(self._queues.items())]

    async def close(self) -> None:
        """Stop delivering; the events still queued, and those being delivered, are counted as dropped."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = sum(queue.qsize() for queue in self._queues.values())
        if left:
            self._deliveries.labels(outcome="dropped").inc(left)
            logger.warning("%d webhook deliveries dropped at shutdown", left)
        if self._http is not None:
            await self._http.aclose()

    async def _run(self, url: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            body = await queue.get()
            try:
                await self._deliver(url, body)
            except asyncio.CancelledError:
                self._deliveries.labels(outcome="dropped").inc()
                raise

    async def _deliver(self, url: str, body: dict[str, Any]) -> None:
        assert self._http is not None
        pause = self._backoff_s
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = await self._http.post(url, json=body)
                if response.status_code < 300:
                    self._deliveries.labels(outcome="delivered").inc()
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            if attempt < self._max_attempts:
                self._deliveries.labels(outcome="retried").inc()
                logger.info("webhook %s failed (%s), attempt %d of %d; retrying in %.1fs", url, problem, attempt,
                            self._max_attempts, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, MAX_BACKOFF_S)
        self._deliveries.labels(outcome="failed").inc()
        logger.warning("webhook %s failed %d times; %s of rollout %s not delivered", url, self._max_attempts,
                       body["metadata"]["event_type"], body["metadata"]["rollout_id"])
