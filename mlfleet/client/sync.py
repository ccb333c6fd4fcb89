"""The synchronous client: :class:`Fleet`."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


class Fleet:
    """The fleet's REST API as typed Python calls.

    ``Fleet()`` reads its settings from the environment and the config file (see
    :mod:`mlfleet.client.config`); arguments override them. Every method raises a subclass of
    :class:`~mlfleet.client.errors.FleetError`; answers 503 are retried with backoff first.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *, registry_url: str | None = None,
                 gateway_url: str | None = None, monitor_url: str | None = None, features_url: str | None = None,
                 config: ClientConfig | None = None, actor: str | None = None,
                 transport: httpx.BaseTransport | None = None, backoff: Backoff = Backoff()) -> None:
        self.config = config or ClientConfig.resolve(url=url, api_key=api_key, registry_url=registry_url,
                                                     gateway_url=gateway_url, monitor_url=monitor_url,
                                                     features_url=features_url)
        self._backoff = backoff
        self._http = httpx.Client(headers=default_headers(self.config, actor), transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, call: Call[T]) -> T:
        """Send one call, retrying 503 answers; the typed answer or the typed error."""
        url = self.config.url(call.service) + call.path
        for attempt in range(self.config.retries + 1):
            try:
                response = self._http.request(call.method, url, **request_kwargs(self.config, call))
            except httpx.TransportError as exc:
                raise transport_error(call, url, exc) from exc
            if not should_retry(call, response, attempt, self.config.retries):
                break
            time.sleep(self._backoff.delay(attempt, response))
        return answer(call, response)

    # --- identity and keys ----------------------------------------------------------------------

    def whoami(self) -> m.Identity:
        return self.send(calls.whoami())

    def create_key(self, name: str, role: m.Role | str, *, rate_limit_per_minute: int | None = None) -> m.KeyCreated:
        """A new API key; its secret is in the answer only. ``rate_limit_per_minute``: requests per minute it may make
        to each service replica (429 above); unlimited when ``None``."""
        return self.send(calls.create_key(name, role, rate_limit_per_minute=rate_limit_per_minute))

    def list_keys(self) -> m.KeyList:
        return self.send(calls.list_keys())

    def revoke_key(self, key_id: int) -> m.KeyPublic:
        return self.send(calls.revoke_key(key_id))

    # --- models and versions --------------------------------------------------------------------

    def list_models(self) -> m.ModelList:
        return self.send(calls.list_models())

    def get_model(self, model: str) -> m.ModelPublic:
        return self.send(calls.get_model(model))

    def create_model(self, model: str, *, description: str = "", gates: m.Gates | Mapping | None = None) -> m.ModelPublic:
        return self.send(calls.create_model(model, description=description, gates=gates))

    def update_model(self, model: str, *, description: str | None = None,
                     gates: m.Gates | Mapping[str, Any] | None = None) -> m.ModelPublic:
        """Change a model's description or validation gates (an admin key); what is left out is kept."""
        return self.send(calls.update_model(model, description=description, gates=gates))

    def list_versions(self, model: str) -> m.VersionList:
        return self.send(calls.list_versions(model))

    def get_version(self, model: str, version: int) -> m.VersionPublic:
        return self.send(calls.get_version(model, version))

    def register(self, model: str, estimator_or_onnx: Any, training_frame: pd.DataFrame | None = None, *,
                 signature: m.Signature | Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None,
                 lineage: m.Lineage | Mapping[str, Any] | None = None, labels: Labels | None = None,
                 holdout: tuple[pd.DataFrame, Labels] | None = None, categorical: Sequence[str] = (),
                 description: str = "",
                 reuse_existing: bool = False) -> m.VersionPublic:
        """Register a fitted scikit-learn estimator or an ONNX model as a new version of ``model``.

        See :func:`~mlfleet.client.packaging.package_version` for what is inferred from
        ``training_frame``. The model is created (default gates) when it does not exist;
        with ``reuse_existing`` an identical artifact already registered is returned instead
        of a duplicate. A version the validation gate refuses raises
        :class:`~mlfleet.client.errors.VersionRejected` with the gate's ``reasons``.
        """
        from mlfleet.client.packaging import package_version  # numpy, pandas, onnx: only when registering

        views = self.feature_views().data if signature is None and training_frame is not None else []
        upload = package_version(estimator_or_onnx, training_frame, signature=signature, metrics=metrics,
                                 lineage=lineage, labels=labels, holdout=holdout, feature_views=views,
                                 categorical=categorical, description=description)
        return self.upload(model, upload, reuse_existing=reuse_existing)

    def upload(self, model: str, upload: VersionUpload, *, reuse_existing: bool = False) -> m.VersionPublic:
        """Upload a packaged version (creating the model when it does not exist)."""
        try:
            self.get_model(model)
        except ModelNotFound:
            try:
                self.create_model(model)
            except Conflict:
                pass
        if reuse_existing:
            same = [v for v in self.list_versions(model).data if v.sha256 == upload.sha256]
            if same:
                return self.get_version(model, same[-1].version)
        return self.send(calls.register_version(model, upload.artifact, upload.metadata))

    # --- traffic, rollouts, audit ---------------------------------------------------------------

    def get_traffic(self, model: str) -> m.TrafficPublic:
        return self.send(calls.get_traffic(model))

    def set_traffic(self, model: str, *, stable: int, canary: int | None = None, canary_percent: float = 0.0,
                    shadow: int | None = None, wait: bool = False, allow_failed: bool = False) -> m.TrafficPublic:
        """Set the split; the registry loads the versions into Triton before it answers.

        With ``wait``, return only once the gateway serves the new policy (it propagates in under a second). A version
        a rollout failed is refused (:class:`Conflict`) unless ``allow_failed``.
        """
        update = m.TrafficUpdate(stable=stable, canary=canary, canary_percent=canary_percent, shadow=shadow)
        policy = self.send(calls.set_traffic(model, update, allow_failed=allow_failed))
        if wait:
            self.wait_until_served(model, policy.revision)
        return policy

    def wait_until_served(self, model: str, revision: int, *, timeout_s: float = 30.0) -> None:
        """Until the gateway serves ``model`` at policy ``revision`` or later; :class:`NotConfirmed` (a
        ``TimeoutError``) when it does not within ``timeout_s`` or cannot be asked."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                routes = self.send(calls.gateway_routes())
            except FleetError as exc:
                raise NotConfirmed(model, revision, str(exc)) from exc
            if routes.serves(model, revision):
                return
            if time.monotonic() > deadline:
                raise NotConfirmed(model, revision, f"not served within {timeout_s:g} s")
            time.sleep(0.05)

    def start_rollout(self, model: str, candidate: int, *, allow_failed: bool = False,
                      **settings: Any) -> m.RolloutPublic:
        """Canary ``candidate`` step by step; ``settings`` are :class:`~mlfleet.client.models.RolloutCreate` fields.
        A candidate a rollout failed before is refused (:class:`Conflict`) unless ``allow_failed``."""
        return self.send(calls.start_rollout(model, m.RolloutCreate(candidate=candidate, **settings),
                                             allow_failed=allow_failed))

    def list_rollouts(self, model: str, *, state: str | None = None, limit: int = 100) -> m.RolloutList:
        """A model's rollouts, newest first."""
        return self.send(calls.list_rollouts(model, state=state, limit=limit))

    def get_rollout(self, model: str, rollout_id: int) -> m.RolloutPublic:
        return self.send(calls.get_rollout(model, rollout_id))

    def latest_rollout(self, model: str) -> m.RolloutPublic | None:
        rollouts = self.list_rollouts(model, limit=1).data
        return rollouts[0] if rollouts else None

    def pause_rollout(self, model: str, rollout_id: int, *, reason: str | None = None) -> m.RolloutPublic:
        return self.send(calls.rollout_action(model, rollout_id, "pause", reason=reason))

    def resume_rollout(self, model: str, rollout_id: int, *, reason: str | None = None) -> m.RolloutPublic:
        return self.send(calls.rollout_action(model, rollout_id, "resume", reason=reason))

    def approve_rollout(self, model: str, rollout_id: int, *, reason: str | None = None) -> m.RolloutPublic:
        return self.send(calls.rollout_action(model, rollout_id, "approve", reason=reason))

    def promote_rollout(self, model: str, rollout_id: int, *, reason: str | None = None) -> m.RolloutPublic:
        return self.send(calls.rollout_action(model, rollout_id, "promote", reason=reason))

    def abort_rollout(self, model: str, rollout_id: int, *, reason: str | None = None) -> m.RolloutPublic:
        return self.send(calls.rollout_action(model, rollout_id, "abort", reason=reason))

    def watch_rollout(self, model: str, rollout_id: int, *, every_s: float = 2.0,
                      outage_s: float = WATCH_OUTAGE_S) -> Iterator[m.RolloutPublic]:
        """The rollout now and after every change, until it is promoted, rolled back or aborted. The registry out of
        reach (unreachable, 503, 504) is polled through for up to ``outage_s``, then its error is raised."""
        last, reached = None, time.monotonic()
        while True:
            try:
                rollout = self.get_rollout(model, rollout_id)
            except TRANSIENT_ERRORS:
                if time.monotonic() - reached >= outage_s:
                    raise
                time.sleep(every_s)
                continue
            reached = time.monotonic()
            if last is None or rollout.model_dump() != last.model_dump():
                yield rollout
            if rollout.state.finished:
                return
            last = rollout
            time.sleep(every_s)

    def rollback(self, model: str, *, reason: str | None = None) -> m.TrafficPublic:
        """Instantly send all traffic back to the previous stable version."""
        return self.send(calls.rollback(model, reason=reason))

    def audit(self, *, model: str | None = None, actor: str | None = None, action: str | None = None,
              before_id: int | None = None, limit: int = 100) -> m.AuditList:
        """Who did what, newest first; ``answer.next_before_id`` as ``before_id`` gives the next page."""
        return self.send(calls.audit(model=model, actor=actor, action=action, before_id=before_id, limit=limit))

    # --- predictions and monitoring -------------------------------------------------------------

    def predict(self, model: str, instances: Mapping[str, Any] | Iterable[Mapping[str, Any]], *,
                routing_key: str | None = None, version: int | None = None) -> m.PredictResponse:
        """Score one instance (a mapping), several, or the rows of a pandas DataFrame; ``version`` pins one the policy
        names."""
        rows = instance_rows(instances)
        return self.send(calls.predict(model, rows, routing_key=routing_key, version=version))

    def feedback(self, request_id: str, label: int, *, instance: int = 0, model: str | None = None,
                 wait_s: float = FEEDBACK_WAIT_S) -> m.FeedbackReport:
        """The true label of a prediction, so the monitor can measure accuracy (see :meth:`feedback_batch`)."""
        return self.feedback_batch([m.FeedbackItem(request_id=request_id, label=label, instance=instance, model=model)],
                                   wait_s=wait_s)

    def feedback_batch(self, items: Iterable[m.FeedbackItem | Mapping[str, Any]], *,
                       wait_s: float = FEEDBACK_WAIT_S) -> m.FeedbackReport:
        """True labels, one outcome per item. A label sent right after its prediction may find the prediction's
        event still on its way to the monitor (``pending``): those are sent again, backing off, for up to
        ``wait_s``."""
        batch = [m.FeedbackItem.model_validate(i) for i in items]
        report = self.send(calls.feedback(batch))
        deadline, delay = time.monotonic() + wait_s, 0.1
        while (positions := pending_feedback(batch, report)) and time.monotonic() + delay < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            again = self.send(calls.feedback([batch[p] for p in positions]))
            report = merged_feedback(report, positions, again)
        return report

    def metrics(self, model: str, *, window_s: float | None = None) -> m.ModelMetrics:
        return self.send(calls.metrics(model, window_s=window_s))

    def drift(self, model: str, *, version: int | None = None) -> m.DriftReport:
        return self.send(calls.drift(model, version=version))

    def alerts(self, *, model: str | None = None, rule: str | None = None, active: bool = False,
               limit: int = 100) -> m.AlertList:
        """The alert history, newest first; ``active``: only the incidents firing now."""
        return self.send(calls.alerts(model=model, rule=rule, active=active, limit=limit))

    def feature_views(self) -> m.FeatureViewList:
        return self.send(calls.feature_views())
