"""Traffic policies: change a model's split (load on Triton → persist → announce), the routing
table gateways poll, and keeping Triton in step with the persisted policies.

When the stable version changes, the old one becomes the policy's *previous stable*: the
target of a rollback, kept loaded on Triton for ``previous_stable_retention_s`` so that a
rollback within that time is a policy write only. Afterwards the reconcile loop reloads the
model without it; a rollback after that reloads it first (about as long as any load).

A change makes before it breaks: the versions it adds are loaded beside the ones Triton
serves, the policy is written, and the reconcile loop unloads every version Triton serves
that no policy has needed for ``unneeded_grace_s``. It asks Triton about every registered
version of the model, so a restarted registry still finds what its predecessor left loaded
(Triton's repository index lists the models of its repository folder, not those loaded
through its API). A change refused after its load therefore leaves the versions the old
policy routes to still served, and the grace keeps a version that another replica has just
loaded for a change it has not written yet.

Every policy write first locks its model's row, so writes of one model queue up across
registry replicas; work that must be atomic with the write (a rollout's state change) runs
in the same transaction (:meth:`TrafficController.apply`). Artifacts are verified against
their sha256 before every Triton load; a corrupted one is refused, counted and audited.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.common.errors import MlfleetError, ModelNotFound, VersionNotFound
from services.common.schemas import ModelRoute, PolicyChanged, RoutingTable, Signature, VersionRoute
from services.registry import repository
from services.registry.artifacts import ArtifactStore
from services.registry.catalog import require_model
from services.registry.database import Database
from services.registry.errors import ArtifactCorrupted
from services.registry.models import ModelVersion, TrafficPolicy, utcnow
from services.registry.publisher import PolicyPublisher
from services.registry.schemas import TrafficPublic, TrafficUpdate
from services.registry.telemetry import RegistryMetrics
from services.registry.triton_repository import TritonRepository

RECONCILER = "reconciler"
"""Actor of the audit events of the reconcile loop."""
T = TypeVar("T")
Then = Callable[[Session, TrafficPublic], T]
"""Work in the transaction that writes a policy, after the write: given the policy as it was before (read under the
model's row lock), it checks that what the change was computed from still holds and writes what goes with it;
raising undoes the policy write too."""
logger = logging.getLogger("mlfleet.registry.traffic")


@dataclass(frozen=True)
class LoadPlan:
    """What Triton must serve for a policy: version → artifact sha256 (and any faults to inject)."""

    model: str
    artifacts: dict[int, str]
    faults: dict[int, dict] = field(default_factory=dict)
    widths: dict[int, int] = field(default_factory=dict)
    """Input width of each version (its signature's inputs), for the warm-up after a load."""
    needed: frozenset[int] = frozenset()
    """The versions the policy needs served; the others in ``artifacts`` are served now and kept until it is written."""

    def only(self, versions: set[int]) -> LoadPlan:
        """This plan restricted to ``versions``."""
        return LoadPlan(self.model, {v: a for v, a in self.artifacts.items() if v in versions},
                        {v: f for v, f in self.faults.items() if v in versions},
                        {v: w for v, w in self.widths.items() if v in versions}, self.needed & versions)


def traffic_public(model: str, policy: TrafficPolicy | None) -> TrafficPublic:
    if policy is None:
        return TrafficPublic(model=model, stable=None, canary=None, canary_percent=0.0, shadow=None, revision=0,
                             updated_at=None)
    return TrafficPublic(model=model, stable=policy.stable, canary=policy.canary, canary_percent=policy.canary_percent,
                         shadow=policy.shadow, revision=policy.revision, updated_at=policy.updated_at)


def previous_stable_after(policy: TrafficPolicy | None, update: TrafficUpdate) -> int | None:
    """The rollback target once ``update`` applies."""
    if policy is None:
        return None
    kept = policy.stable if policy.stable != update.stable else policy.previous_stable
    return kept if kept not in update.versions else None


def previous_stable_until(policy: TrafficPolicy | None, update: TrafficUpdate, *, now: datetime,
                          retention_s: float) -> datetime | None:
    """Until when the rollback target of ``update`` stays loaded: a new one for ``retention_s`` from ``now``,
    an unchanged one as long as before."""
    if policy is None or previous_stable_after(policy, update) is None:
        return None
    if policy.stable != update.stable:
        return now + timedelta(seconds=retention_s)
    return policy.previous_stable_until


def versions_to_load(policy: TrafficPolicy | None, update: TrafficUpdate, *, now: datetime,
                     retention_s: float | None) -> set[int]:
    """What Triton must serve once ``update`` applies: its versions, and the rollback target while retained (none
    when ``retention_s`` is ``None``: the update keeps no rollback target)."""
    if retention_s is None:
        return set(update.versions)
    kept = previous_stable_after(policy, update)
    until = previous_stable_until(policy, update, now=now, retention_s=retention_s)
    return update.versions | ({kept} if kept is not None and until is not None and now < until else set())


def triton_lock_name(model: str) -> str:
    """The fleet-wide lock a replica holds from reading a model's plan to loading it on Triton and writing its policy:
    without it, one replica's reconcile could finish loading an older plan after another replica wrote a policy that
    needs a version the load dropped."""
    return f"mlfleet:triton-load:{model}"


class TrafficController:
    def __init__(self, *, database: Database, artifacts: ArtifactStore, triton: TritonRepository,
                 publisher: PolicyPublisher, metrics: RegistryMetrics, previous_stable_retention_s: float,
                 unneeded_grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._database = database
        self._retention_s = previous_stable_retention_s
        self._unneeded_grace_s = unneeded_grace_s
        self._clock = clock
        self._unneeded_since: dict[tuple[str, int], float] = {}
        """When this process first saw Triton serve each (model, version) that no policy needed."""
        self._artifacts = artifacts
        self._triton = triton
        self._publisher = publisher
        self._metrics = metrics
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._audited_corruptions: set[str] = set()

    async def get(self, *, model: str) -> TrafficPublic:
        def work(session: Session) -> TrafficPublic:
            registered = require_model(session, name=model)
            return traffic_public(model, repository.get_policy(session, model=registered))

        return await self._database.transaction(work)

    async def set(self, *, model: str, update: TrafficUpdate, actor: str, action: str = "traffic.set",
                  reason: str = "") -> TrafficPublic:
        """:meth:`apply` with nothing else in the transaction."""
        public, _ = await self.apply(model=model, update=update, actor=actor, action=action, reason=reason,
                                     then=_nothing)
        return public

    async def apply(self, *, model: str, update: TrafficUpdate, actor: str, then: Then[T],
                    action: str = "traffic.set", reason: str = "",
                    keep_previous_stable: bool = True) -> tuple[TrafficPublic, T]:
        """Load the versions ``update`` needs on Triton, then persist it under a new revision together with
        ``then`` in one transaction, and announce it; the new policy and what ``then`` returned.

        Triton is loaded before the database changes, so a policy is never visible before
        Triton can serve it, and the load keeps every version the current policy needs that
        Triton serves, so a change that ``then`` refuses after the load leaves the current
        policy served. When Triton already serves every version needed (a percentage change,
        a rollback to the previous stable within its retention, a rollout's end), nothing is
        reloaded and the change is only a policy write. Versions no longer needed are unloaded
        by the reconcile loop (:meth:`keep_triton_in_step`). A model's plan, load and write
        (and the reconcile loop's plan and load) are serialised in this process by a lock and
        across replicas by the database's exclusive lock of :func:`triton_lock_name` (PostgreSQL),
        so no replica loads from a plan older than the policy another one wrote meanwhile; the
        write itself also takes the model's row lock.

        ``keep_previous_stable=False`` (a rollback) leaves no rollback target: the stable it replaces is the version
        rolled back from, and a second rollback must not put it back.
        """
        async with self._locks[model], self._database.exclusive(triton_lock_name(model)):
            plan = await self._database.transaction(_plan, model=model, update=update, now=utcnow(),
                                                    retention_s=self._retention_s if keep_previous_stable else None)
            served = await self._triton.ready_versions(plan.model, plan.artifacts)
            if not plan.needed <= served:
                await self._load(plan.only(set(plan.needed) | served), actor=actor,
                                 attempt={"action": action, "update": update.model_dump(mode="json")})
            public, result = await self._database.transaction(
                _persist, model=model, update=update, actor=actor, action=action, reason=reason, now=utcnow(),
                retention_s=self._retention_s if keep_previous_stable else None, then=then)
        await self._publisher.publish(PolicyChanged(model=model, revision=public.revision))
        return public, result

    async def routing_table(self) -> RoutingTable:
        return await self._database.transaction(_routing_table, now=utcnow())

    async def reconcile(self) -> list[str]:
        """Reload every model whose policy needs versions Triton does not serve, or for which Triton has served a
        version its policy does not need (one a change or a rollback left, a previous stable past its retention) for
        ``unneeded_grace_s``; the models reloaded. A reload keeps the unneeded versions still within their grace.
        Each model's plan is read once its lock is held, so a policy change that ran meanwhile is not undone from an
        older plan. A model that fails to load (a corrupted artifact, counted each time and audited once per
        artifact and process; Triton refusing or timing out) is logged and skipped: the models after it are still
        brought in step."""
        models = await self._database.transaction(_models_with_policies)
        reloaded = []
        for model in models:
            async with self._locks[model]:
                if await self._out_of_step(model) is None:
                    continue  # the common case, checked without the fleet-wide lock (a connection of its own)
                async with self._database.exclusive(triton_lock_name(model)):
                    out_of_step = await self._out_of_step(model)  # again: another replica may have moved it meanwhile
                    if out_of_step is None:
                        continue
                    plan, served, missing, unneeded = out_of_step
                    if missing:
                        logger.info("Triton lacks versions %s of %s; reloading", sorted(missing), plan.model)
                    if unneeded:
                        logger.info("no policy of %s has needed v%s for %gs; reloading without it", plan.model,
                                    sorted(unneeded), self._unneeded_grace_s)
                    within_grace = served - set(plan.artifacts) - unneeded
                    if within_grace:
                        state = await self._database.transaction(_model_state, model=model, now=utcnow(),
                                                                 keep=within_grace)
                        assert state is not None
                        plan = state[0]
                    try:
                        await self._load(plan, actor=RECONCILER,
                                         attempt={"action": "reconcile", "versions": sorted(plan.artifacts)})
                    except MlfleetError as exc:
                        logger.warning("%s not reloaded: %s", plan.model, exc.detail)
                        continue
                    reloaded.append(plan.model)
        return reloaded

    async def _out_of_step(self, model: str) -> tuple[LoadPlan, set[int], set[int], set[int]] | None:
        """``(plan, served, missing, unneeded)`` when Triton lacks a version ``model``'s policy needs or has served one
        it does not need past the grace; ``None`` when it is in step (or the model has no policy)."""
        state = await self._database.transaction(_model_state, model=model, now=utcnow())
        if state is None:
            return None
        plan, registered = state
        served = await self._triton.ready_versions(plan.model, registered)
        missing = set(plan.artifacts) - served
        unneeded = self._unneeded_past_grace(model, served - set(plan.artifacts))
        return (plan, served, missing, unneeded) if missing or unneeded else None

    def _unneeded_past_grace(self, model: str, unneeded: set[int]) -> set[int]:
        """Of ``model``'s versions served but unneeded now, those unneeded for ``unneeded_grace_s``."""
        now = self._clock()
        for key in [key for key in self._unneeded_since if key[0] == model and key[1] not in unneeded]:
            del self._unneeded_since[key]  # needed again, or unloaded
        since = {version: self._unneeded_since.setdefault((model, version), now) for version in unneeded}
        return {version for version, first in since.items() if now - first >= self._unneeded_grace_s}

    async def keep_triton_in_step(self, interval_s: float, *, first_retry_s: float = 1.0) -> None:
        """Run :meth:`reconcile` now and every ``interval_s``, logging (never raising) failures. Until a pass has
        succeeded, a failed one is tried again after ``first_retry_s``: a registry started beside Triton (``mlfleet
        up`` starts them together, as pods start in any order) loads the served models as soon as Triton answers,
        not an interval later."""
        in_step = False
        while True:
            try:
                await self.reconcile()
                in_step = True
            except MlfleetError as exc:
                logger.warning("could not bring Triton in step with the traffic policies: %s", exc.detail)
            except Exception:
                logger.exception("unexpected error while bringing Triton in step with the traffic policies")
            await asyncio.sleep(interval_s if in_step else min(first_retry_s, interval_s))

    async def _load(self, plan: LoadPlan, *, actor: str, attempt: dict[str, Any]) -> None:
        artifacts = {}
        for version, sha256 in plan.artifacts.items():
            try:
                artifacts[version] = await anyio.to_thread.run_sync(self._artifacts.read, sha256)
            except ArtifactCorrupted as exc:
                await self._refused(plan.model, version, sha256, exc, actor=actor, attempt=attempt)
                raise
        started, outcome = time.perf_counter(), "failed"
        try:
            await self._triton.load(plan.model, artifacts, plan.faults)
            await self._triton.warm(plan.model, plan.widths)
            outcome = "loaded"
        finally:
            self._metrics.triton_loads.labels(outcome=outcome).observe(time.perf_counter() - started)

    async def _refused(self, model: str, version: int, sha256: str, error: ArtifactCorrupted, *, actor: str,
                       attempt: dict[str, Any]) -> None:
        """Count and audit a load refused for a corrupted artifact; the reconcile loop, which retries every
        interval, audits each artifact once per process. A failing audit write is logged, never raised, so the
        caller still gets the corruption error."""
        self._metrics.artifacts_corrupted.inc()
        logger.error("refused to load %s v%d on Triton: %s", model, version, error.detail)
        if actor == RECONCILER and sha256 in self._audited_corruptions:
            return
        try:
            await self._database.transaction(_audit_corrupted, model=model, version=version, sha256=sha256,
                                             error=error.detail, actor=actor, attempt=attempt)
        except SQLAlchemyError:
            logger.exception("could not audit the corrupted artifact %s of %s v%d", sha256, model, version)
            return
        self._audited_corruptions.add(sha256)


def _plan(session: Session, *, model: str, update: TrafficUpdate, now: datetime,
          retention_s: float | None) -> LoadPlan:
    """What ``update`` needs served, with what the current policy needs (kept while it is served: see ``needed``)."""
    registered = require_model(session, name=model)
    policy = repository.get_policy(session, model=registered)
    wanted = versions_to_load(policy, update, now=now, retention_s=retention_s)
    current = set(policy.loaded_versions(now)) if policy is not None else set()
    rows = repository.get_versions(session, model=registered, versions=wanted | current)
    missing = sorted(update.versions - set(rows))
    if missing:
        raise VersionNotFound(f"model {model!r} has no version {', '.join(map(str, missing))}")
    return _load_plan(model, rows, needed=wanted & set(rows))


def _load_plan(model: str, rows: dict[int, ModelVersion], needed: set[int] | None = None) -> LoadPlan:
    return LoadPlan(model=model, artifacts={v: row.sha256 for v, row in rows.items()},
                    faults={v: row.fault_injection for v, row in rows.items() if row.fault_injection},
                    widths={v: len(row.signature["inputs"]) for v, row in rows.items()},
                    needed=frozenset(rows if needed is None else needed))


def _persist(session: Session, *, model: str, update: TrafficUpdate, actor: str, action: str, reason: str,
             now: datetime, retention_s: float | None, then: Then[T]) -> tuple[TrafficPublic, T]:
    """``retention_s`` ``None``: the new policy keeps no rollback target."""
    registered = repository.lock_model(session, name=model)
    if registered is None:
        raise ModelNotFound(f"model {model!r} does not exist")
    previous = repository.get_policy(session, model=registered)
    before = traffic_public(model, previous)
    if retention_s is None:
        previous_stable, until = None, None
    else:
        previous_stable = previous_stable_after(previous, update)
        until = previous_stable_until(previous, update, now=now, retention_s=retention_s)
    policy = repository.save_policy(
        session, model=registered, stable=update.stable, canary=update.canary, canary_percent=update.canary_percent,
        shadow=update.shadow, previous_stable=previous_stable, previous_stable_until=until,
        revision=repository.next_policy_revision(session),
    )
    detail = {"before": before.model_dump(mode="json", include={"stable", "canary", "canary_percent", "shadow"}),
              "after": update.model_dump(mode="json"), "revision": policy.revision,
              "loaded_versions": policy.loaded_versions(now)}
    if reason:
        detail["reason"] = reason
    repository.add_audit(session, actor=actor, action=action, model=model, version=update.stable, detail=detail)
    return traffic_public(model, policy), then(session, before)


def _nothing(session: Session, before: TrafficPublic) -> None:
    return None


def _audit_corrupted(session: Session, *, model: str, version: int, sha256: str, error: str, actor: str,
                     attempt: dict[str, Any]) -> None:
    repository.add_audit(session, actor=actor, action="artifact.corrupted", model=model, version=version,
                         detail={"sha256": sha256, "error": error, "attempted": attempt})


def _plan_of(session: Session, policy: TrafficPolicy, now: datetime, keep: Collection[int] = ()) -> LoadPlan:
    """What ``policy`` needs served, and ``keep`` (versions no policy needs, served a while longer)."""
    needed = set(policy.loaded_versions(now))
    rows = repository.get_versions(session, model=policy.model, versions=needed | set(keep))
    return _load_plan(policy.model.name, rows, needed=needed & set(rows))


def _models_with_policies(session: Session) -> list[str]:
    return [policy.model.name for policy in repository.list_policies(session)]


def _model_state(session: Session, *, model: str, now: datetime,
                 keep: Collection[int] = ()) -> tuple[LoadPlan, list[int]] | None:
    """The plan of ``model``'s policy as it is now (and ``keep``), and every registered version; ``None`` without a
    policy."""
    registered = repository.get_model(session, name=model)
    policy = repository.get_policy(session, model=registered) if registered is not None else None
    if policy is None:
        return None
    return _plan_of(session, policy, now, keep), repository.version_numbers(session, model=registered)


def _routing_table(session: Session, *, now: datetime) -> RoutingTable:
    routes = []
    for policy in repository.list_policies(session):
        rows = repository.get_versions(session, model=policy.model, versions=policy.loaded_versions(now))
        routes.append(ModelRoute(
            model=policy.model.name, revision=policy.revision, stable=policy.stable, canary=policy.canary,
            canary_percent=policy.canary_percent, shadow=policy.shadow,
            versions=[VersionRoute(version=v, signature=Signature.model_validate(rows[v].signature)) for v in sorted(rows)],
        ))
    return RoutingTable(revision=max((r.revision for r in routes), default=0), models=routes)
