"""The asynchronous client: :class:`AsyncFleet`, the same API as :class:`~mlfleet.client.sync.Fleet` awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from mlfleet.client import calls
from mlfleet.client import models as m
from mlfleet.client.calls import Call
from mlfleet.client.config import ClientConfig
from mlfleet.client.feedback import FEEDBACK_WAIT_S, merged_feedback, pending_feedback
from mlfleet.client.errors import Conflict, FleetError, ModelNotFound, NotConfirmed
from mlfleet.client.instances import instance_rows
from mlfleet.client.transport import (TRANSIENT_ERRORS, WATCH_OUTAGE_S, Backoff, answer, default_headers,
                                      request_kwargs, should_retry, transport_error)

if TYPE_CHECKING:
    import pandas as pd

    from mlfleet.client.packaging import Labels, VersionUpload

T = TypeVar("T")


class AsyncFleet:
    """Async twin of :class:`~mlfleet.client.sync.Fleet`; use ``async with AsyncFleet() as fleet``."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, registry_url: str | None = None,
                 gateway_url: str | None = None, monitor_url: str | None = None, features_url: str | None = None,
                 config: ClientConfig | None = None, actor: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, backoff: Backoff = Backoff()) -> None:
        self.config = config or ClientConfig.resolve(url=url, api_key=api_key, registry_url=registry_url,
                                                     gateway_url=gateway_url, monitor_url=monitor_url,
                                                     features_url=features_url)
        self._backoff = backoff
        self._http = httpx.AsyncClient(headers=default_headers(self.config, actor), transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncFleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send(self, call: Call[T]) -> T:
        url = self.config.url(call.service) + call.path
        for attempt in range(self.config.retries + 1):
            try:
                response = await self._http.request(call.method, url, **request_kwargs(self.config, call))
            except httpx.TransportError as exc:
                raise transport_error(call, url, exc) from exc
            if not should_retry(call, response, attempt, self.config.retries):
                break
            await asyncio.sleep(self._backoff.delay(attempt, response))
        return answer(call, response)

    async def whoami(self) -> m.Identity:
        return await self.send(calls.whoami())

    async def create_key(self, name: str, role: m.Role | str, *,
                         rate_limit_per_minute: int | None = None) -> m.KeyCreated:
        return await self.send(calls.create_key(name, role, rate_limit_per_minute=rate_limit_per_minute))

    async def list_keys(self) -> m.KeyList:
        return await self.send(calls.list_keys())

    async def revoke_key(self, key_id: int) -> m.KeyPublic:
        return await self.send(calls.revoke_key(key_id))

    async def list_models(self) -> m.ModelList:
        return await self.send(calls.list_models())

    async def get_model(self, model: str) -> m.ModelPublic:
        return await self.send(calls.get_model(model))

    async def create_model(self, model: str, *, description: str = "",
                           gates: m.Gates | Mapping | None = None) -> m.ModelPublic:
        return await self.send(calls.create_model(model, description=description, gates=gates))

    async def update_model(self, model: str, *, description: str | None = None,
                           gates: m.Gates | Mapping[str, Any] | None = None) -> m.ModelPublic:
        """Change a model's description or validation gates (an admin key); what is left out is kept."""
        return await self.send(calls.update_model(model, description=description, gates=gates))

    async def list_versions(self, model: str) -> m.VersionList:
        return await self.send(calls.list_versions(model))

    async def get_version(self, model: str, version: int) -> m.VersionPublic:
        return await self.send(calls.get_version(model, version))

    async def register(self, model: str, estimator_or_onnx: Any, training_frame: pd.DataFrame | None = None, *,
                       signature: m.Signature | Mapping[str, Any] | None = None,
                       metrics: Mapping[str, float] | None = None, lineage: m.Lineage | Mapping[str, Any] | None = None,
                       labels: Labels | None = None, holdout: tuple[pd.DataFrame, Labels] | None = None,
                       categorical: Sequence[str] = (), description: str = "",
                       reuse_existing: bool = False) -> m.VersionPublic:
        """See :meth:`Fleet.register <mlfleet.client.sync.Fleet.register>`; conversion runs in a worker thread."""
        from mlfleet.client.packaging import package_version  # numpy, pandas, onnx: only when registering

        views = (await self.feature_views()).data if signature is None and training_frame is not None else []
        upload = await asyncio.to_thread(
            package_version, estimator_or_onnx, training_frame, signature=signature, metrics=metrics, lineage=lineage,
            labels=labels, holdout=holdout, feature_views=views, categorical=categorical,
            description=description)
        return await self.upload(model, upload, reuse_existing=reuse_existing)

    async def upload(self, model: str, upload: VersionUpload, *, reuse_existing: bool = False) -> m.VersionPublic:
        try:
            await self.get_model(model)
        except ModelNotFound:
            try:
                await self.create_model(model)
            except Conflict:
                pass
        if reuse_existing:
            same = [v for v in (await self.list_versions(model)).data if v.sha256 == upload.sha256]
            if same:
                return await self.get_version(model, same[-1].version)
        return await self.send(calls.register_version(model, upload.artifact, upload.metadata))

    async def get_traffic(self, model: str) -> m.TrafficPublic:
        return await self.send(calls.get_traffic(model))

    async def set_traffic(self, model: str, *, stable: int, canary: int | None = None, canary_percent: float = 0.0,
                          shadow: int | None = None, wait: bool = False, allow_failed: bool = False) -> m.TrafficPublic:
        update = m.TrafficUpdate(stable=stable, canary=canary, canary_percent=canary_percent, shadow=shadow)
        policy = await self.send(calls.set_traffic(model, update, allow_failed=allow_failed))
        if wait:
            await self.wait_until_served(model, policy.revision)
        return policy

    async def wait_until_served(self, model: str, revision: int, *, timeout_s: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                routes = await self.send(calls.gateway_routes())
            except FleetError as exc:
                raise NotConfirmed(model, revision, str(exc)) from exc
            if routes.serves(model, revision):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise NotConfirmed(model, revision, f"not served within {timeout_s:g} s")
            await asyncio.sleep(0.05)

    async def start_rollout(self, model: str, candidate: int, *, allow_failed: bool = False,
                            **settings: Any) -> m.RolloutPublic:
        return await self.send(calls.start_rollout(model, m.RolloutCreate(candidate=candidate, **settings),
                                                   allow_failed=allow_failed))

    async def list_rollouts(self, model: str, *, state: str | None = None, limit: int = 100) -> m.RolloutList:
        """A model's rollouts, newest first."""
        return await self.send(calls.list_rollouts(model, state=state, limit=limit))

    async def get_rollout(self, model: str, rollout_id: int) -> m.RolloutPublic:
        return await self.send(calls.get_rollout(model, rollout_id))

    async def latest_rollout(self, model: str) -> m.RolloutPublic | None:
        rollouts = (await self.list_rollouts(model, limit=1)).data
        return rollouts[0] if rollouts else None

    async def pause_rollout(self, model: str, rollout_id: int, *, reason: str | None = None) -> m.RolloutPublic:
        return await self.send(calls.rollout_action(model, rollout_id, "pause", reason=reason))

    async def resume_rollout(self, model: str, rollout_id: int, *, reason: str | None = None) -> m.RolloutPublic:
        return await self.send(calls.rollout_action(model, rollout_id, "resume", reason=reason))

    async def approve_rollout(self, model: str, rollout_id: int, *, reason: str | None = None) -> m.RolloutPublic:
        return await self.send(calls.rollout_action(model, rollout_id, "approve", reason=reason))

    async def promote_rollout(self, model: str, rollout_id: int, *, reason: str | None = None) -> m.RolloutPublic:
        return await self.send(calls.rollout_action(model, rollout_id, "promote", reason=reason))

    async def abort_rollout(self, model: str, rollout_id: int, *, reason: str | None = None) -> m.RolloutPublic:
        return await self.send(calls.rollout_action(model, rollout_id, "abort", reason=reason))

    async def watch_rollout(self, model: str, rollout_id: int, *, every_s: float = 2.0,
                            outage_s: float = WATCH_OUTAGE_S) -> AsyncIterator[m.RolloutPublic]:
        last, reached = None, time.monotonic()
        while True:
            try:
                rollout = await self.get_rollout(model, rollout_id)
            except TRANSIENT_ERRORS:
                if time.monotonic() - reached >= outage_s:
                    raise
                await asyncio.sleep(every_s)
                continue
            reached = time.monotonic()
            if last is None or rollout.model_dump() != last.model_dump():
                yield rollout
            if rollout.state.finished:
                return
            last = rollout
            await asyncio.sleep(every_s)

    async def rollback(self, model: str, *, reason: str | None = None) -> m.TrafficPublic:
        return await self.send(calls.rollback(model, reason=reason))

    async def audit(self, *, model: str | None = None, actor: str | None = None, action: str | None = None,
                    before_id: int | None = None, limit: int = 100) -> m.AuditList:
        """Who did what, newest first; ``answer.next_before_id`` as ``before_id`` gives the next page."""
        return await self.send(calls.audit(model=model, actor=actor, action=action, before_id=before_id,
                                           limit=limit))

    async def predict(self, model: str, instances: Mapping[str, Any] | Iterable[Mapping[str, Any]], *,
                      routing_key: str | None = None, version: int | None = None) -> m.PredictResponse:
        rows = instance_rows(instances)
        return await self.send(calls.predict(model, rows, routing_key=routing_key, version=version))

    async def feedback(self, request_id: str, label: int, *, instance: int = 0, model: str | None = None,
                       wait_s: float = FEEDBACK_WAIT_S) -> m.FeedbackReport:
        return await self.feedback_batch([m.FeedbackItem(request_id=request_id, label=label, instance=instance, model=model)],
                                         wait_s=wait_s)

    async def feedback_batch(self, items: Iterable[m.FeedbackItem | Mapping[str, Any]], *,
                             wait_s: float = FEEDBACK_WAIT_S) -> m.FeedbackReport:
        """As :meth:`mlfleet.client.Fleet.feedback_batch`: ``pending`` labels are sent again for up to ``wait_s``."""
        batch = [m.FeedbackItem.model_validate(i) for i in items]
        report = await self.send(calls.feedback(batch))
        deadline, delay = time.monotonic() + wait_s, 0.1
        while (positions := pending_feedback(batch, report)) and time.monotonic() + delay < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            again = await self.send(calls.feedback([batch[p] for p in positions]))
            report = merged_feedback(report, positions, again)
        return report

    async def metrics(self, model: str, *, window_s: float | None = None) -> m.ModelMetrics:
        return await self.send(calls.metrics(model, window_s=window_s))

    async def drift(self, model: str, *, version: int | None = None) -> m.DriftReport:
        return await self.send(calls.drift(model, version=version))

    async def alerts(self, *, model: str | None = None, rule: str | None = None, active: bool = False,
                     limit: int = 100) -> m.AlertList:
        """The alert history, newest first; ``active``: only the incidents firing now."""
        return await self.send(calls.alerts(model=model, rule=rule, active=active, limit=limit))

    async def feature_views(self) -> m.FeatureViewList:
        return await self.send(calls.feature_views())
