"""Progressive delivery: start, judge, advance, promote or roll back a canary; instant rollback.

A rollout lives in the database (``rollouts`` and ``rollout_steps``), so a restarted
registry resumes it where it was. The controller (:meth:`RolloutController.run`, owned by
the app's lifespan) looks every ``tick_s`` for rollouts whose interval is over, asks the
monitor for canary and stable numbers over exactly that interval, judges them with the
pure functions of :mod:`services.registry.verdict`, records the step with its numbers,
and moves the traffic through :class:`TrafficController` (so gateways see it at once).
The monitor sums whole 10 s buckets, so an interval shorter than that also sees some of
the traffic just before it; a hold for too few requests keeps its interval open.

Admin actions and the controller's moves on one model are serialised by a per-model
lock in each process. Every change is audited with its actor (a key name, or ``controller``)
and reason. Every registry replica runs a controller, but only the one holding the
controller's :class:`~services.registry.lease.Lease` (a database row) judges rollouts; the
others wait to take it over. Admin actions are served by any replica, so across replicas
the database decides: a rollout's state change and the traffic change that goes with it are
written in one transaction (:meth:`TrafficController.apply`), which locks the rollout's row
and re-checks it first — an admin action needs the rollout still active (in the state it
was read in, for pause, resume and approve), a verdict needs it unmoved since it was read —
and answers 409 otherwise; at most one rollout per model is active (a partial unique index).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import anyio.to_thread
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.errors import Conflict, MlfleetError, NotFound, RolloutConflict, VersionNotFound
from services.registry import repository
from services.registry.catalog import require_model
from services.registry.database import Database
from services.registry.lease import Lease
from services.registry.models import Rollout, utcnow
from services.registry.monitor_client import MonitorClient
from services.registry.schemas import (
    ACTIVE_ROLLOUT_STATES,
    RolloutChecks,
    RolloutCreate,
    RolloutList,
    RolloutPublic,
    RolloutState,
    RolloutStepPublic,
    TrafficPublic,
    TrafficUpdate,
    Verdict,
    VersionStatus,
)
from services.registry.telemetry import RegistryMetrics
from services.registry.traffic import TrafficController, traffic_public
from services.registry.verdict import Decision, Judgement, Move, Outcome, Position, VersionNumbers, decide, judge
from services.registry.webhooks import RolloutEvent, RolloutNotice, WebhookNotifier

CONTROLLER = "controller"
ACTIVE = [s.value for s in ACTIVE_ROLLOUT_STATES]
JUDGED = [RolloutState.running.value, RolloutState.awaiting_approval.value]
logger = logging.getLogger("mlfleet.registry.rollout")


def rollout_public(row: Rollout) -> RolloutPublic:
    return RolloutPublic(
        id=row.id, model=row.model.name, candidate=row.candidate, baseline=row.baseline, state=RolloutState(row.state),
        step_index=row.step_index, canary_percent=row.canary_percent, steps=list(row.steps), interval_s=row.interval_s,
        min_requests=row.min_requests, checks=RolloutChecks.model_validate(row.checks), max_failures=row.max_failures,
        failures=row.failures, require_approval=row.require_approval, approved=row.approved,
        progress_deadline_s=row.progress_deadline_s, reason=row.reason,
        history=[RolloutStepPublic(at=s.at, canary_percent=s.canary_percent, verdict=Verdict(s.verdict),
                                   reasons=list(s.reasons), canary=s.canary, stable=s.stable) for s in row.history],
        created_by=row.created_by, created_at=row.created_at, updated_at=row.updated_at,
    )


def policy_update(policy: TrafficPublic, *, stable: int, canary: int | None = None,
                  canary_percent: float = 0.0) -> TrafficUpdate:
    """A traffic update that keeps the policy's shadow unless it would collide with stable or canary."""
    shadow = policy.shadow if policy.shadow not in (stable, canary) else None
    return TrafficUpdate(stable=stable, canary=canary, canary_percent=canary_percent if canary else 0.0, shadow=shadow)


@dataclass(frozen=True)
class Snapshot:
    """A rollout as read before a verdict; the verdict is written only if the row has not moved since."""

    public: RolloutPublic
    step_started_at: datetime

    @property
    def model(self) -> str:
        return self.public.model

    def due(self, now: datetime) -> bool:
        return now >= self.step_started_at + timedelta(seconds=self.public.interval_s)

    def position(self, now: datetime) -> Position:
        """Where the rollout stands; a rollout waiting for approval waits for a person, with no deadline."""
        p = self.public
        deadline = p.progress_deadline_s if p.state is RolloutState.running else None
        return Position(step_index=p.step_index, steps=p.steps, failures=p.failures, max_failures=p.max_failures,
                        require_approval=p.require_approval, approved=p.approved,
                        held_s=(now - self.step_started_at).total_seconds(), progress_deadline_s=deadline)


class RolloutController:
    def __init__(self, *, database: Database, traffic: TrafficController, monitor: MonitorClient,
                 notifier: WebhookNotifier, metrics: RegistryMetrics, tick_s: float, lease: Lease) -> None:
        self._database = database
        self._lease = lease
        self._traffic = traffic
        self._monitor = monitor
        self._notifier = notifier
        self._metrics = metrics
        self._tick_s = tick_s
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # --- reads -----------------------------------------------------------------------------------

    async def list(self, *, model: str, state: RolloutState | None = None, limit: int = 100) -> RolloutList:
        """A model's rollouts, newest first: at most ``limit``, only those in ``state`` if given."""
        def work(session: Session) -> list[RolloutPublic]:
            rows = repository.list_rollouts(session, model=require_model(session, name=model),
                                            state=state.value if state is not None else None, limit=limit)
            return [rollout_public(r) for r in rows]

        rollouts = await self._database.transaction(work)
        return RolloutList(data=rollouts, count=len(rollouts))

    async def get(self, *, model: str, rollout_id: int) -> RolloutPublic:
        snapshot = await self._database.transaction(_snapshot, model=model, rollout_id=rollout_id)
        return snapshot.public

    # --- admin actions ---------------------------------------------------------------------------

    async def start(self, *, model: str, body: RolloutCreate, actor: str, allow_failed: bool = False) -> RolloutPublic:
        """Put ``body.candidate`` on the first step against the current stable; 409 if a rollout is active.

        The rollout and its first split are written in one transaction, only if no rollout
        started and the traffic did not change since it was read: of rollouts started at
        once, on any replica, one wins and the others get 409 and change nothing.
        """
        async with self._locks[model]:
            policy = await self._database.transaction(_startable, model=model, candidate=body.candidate,
                                                      allow_failed=allow_failed)
            update = policy_update(policy, stable=policy.stable, canary=body.candidate, canary_percent=body.steps[0])
            reason = f"rollout of v{body.candidate} started against v{policy.stable}"
            _, public = await self._traffic.apply(
                model=model, update=update, actor=actor, reason=reason,
                then=partial(_create, model=model, body=body, baseline=policy.stable, revision=policy.revision,
                             actor=actor))
        self._announce(RolloutEvent.started, public, actor=actor, reason=reason)
        return public

    async def pause(self, *, model: str, rollout_id: int, actor: str, reason: str) -> RolloutPublic:
        async with self._locks[model]:
            current = await self._active(model, rollout_id)
            if current.public.state is RolloutState.paused:
                return current.public
            return await self._database.transaction(
                _transition, model=model, rollout_id=rollout_id, expected=current.public.state,
                state=RolloutState.paused, actor=actor, action="rollout.pause", reason=reason or "paused")

    async def resume(self, *, model: str, rollout_id: int, actor: str, reason: str) -> RolloutPublic:
        async with self._locks[model]:
            current = await self._active(model, rollout_id)
            if current.public.state is RolloutState.running:
                return current.public
            if current.public.state is not RolloutState.paused:
                raise RolloutConflict(f"rollout {rollout_id} is {current.public.state.value}, not paused")
            return await self._database.transaction(
                _transition, model=model, rollout_id=rollout_id, expected=RolloutState.paused,
                state=RolloutState.running, actor=actor, action="rollout.resume", reason=reason or "resumed",
                restart_interval=True)

    async def approve(self, *, model: str, rollout_id: int, actor: str, reason: str) -> RolloutPublic:
        """Approve the final step: promote now if the rollout waits for it, otherwise when it gets there. Only for a
        rollout started with ``require_approval``: the others promote on their own, and ``promote`` promotes now."""
        async with self._locks[model]:
            current = await self._active(model, rollout_id)
            if not current.public.require_approval:
                raise RolloutConflict(f"rollout {rollout_id} was started without require_approval: it promotes on its "
                                      "own after its last step; promote it to promote now")
            if current.public.state is RolloutState.awaiting_approval:
                _, public = await self._finish(current, Move.promote, actor=actor, reason=reason or "approved")
                return public
            return await self._database.transaction(
                _transition, model=model, rollout_id=rollout_id, expected=current.public.state,
                state=current.public.state, actor=actor, action="rollout.approve", reason=reason or "approved",
                approve=True)

    async def promote(self, *, model: str, rollout_id: int, actor: str, reason: str) -> RolloutPublic:
        async with self._locks[model]:
            current = await self._active(model, rollout_id)
            _, public = await self._finish(current, Move.promote, actor=actor, reason=reason or "promoted by hand")
            return public

    async def abort(self, *, model: str, rollout_id: int, actor: str, reason: str) -> RolloutPublic:
        async with self._locks[model]:
            current = await self._active(model, rollout_id)
            _, public = await self._finish(current, Move.abort, actor=actor, reason=reason or "aborted")
            return public

    async def rollback(self, *, model: str, actor: str, reason: str) -> TrafficPublic:
        """Instant rollback: an active rollout's canary is cleared; otherwise stable goes back to the previous stable,
        and the version rolled back from is no rollback target (a second rollback is a 409, not a way back to it).

        Within the previous stable's retention every version needed is still loaded on Triton,
        so this is one policy write and one announcement; after it, the previous stable is
        reloaded on Triton first. 409 if the rollout ended, or the traffic changed, meanwhile.
        """
        async with self._locks[model]:
            active = await self._database.transaction(_active_of, model=model)
            if active is not None:
                traffic, _ = await self._finish(active, Move.roll_back, actor=actor,
                                                reason=reason or "rolled back by hand", mark_failed=False)
                return traffic
            policy, previous = await self._database.transaction(_rollback_target, model=model)
            rolled_back, _ = await self._traffic.apply(
                model=model, update=policy_update(policy, stable=previous), actor=actor, action="traffic.rollback",
                reason=reason or f"rolled back from v{policy.stable} to v{previous}",
                then=partial(_unchanged_traffic, model=model, revision=policy.revision), keep_previous_stable=False)
            self._metrics.rollbacks.labels(model=model, trigger="manual").inc()
            return rolled_back

    async def set_traffic(self, *, model: str, update: TrafficUpdate, actor: str,
                          allow_failed: bool = False) -> TrafficPublic:
        """A manual traffic change; refused while a rollout owns the model's traffic, and when it names a version a
        rollout failed that the current policy does not serve, unless ``allow_failed``."""
        async with self._locks[model]:
            if not allow_failed:
                await self._database.transaction(_refuse_failed, model=model, update=update)
            active = await self._database.transaction(_active_of, model=model)
            if active is not None:
                raise RolloutConflict(f"rollout {active.public.id} of {model!r} is {active.public.state.value}; "
                                      "abort it (or let it finish) before setting traffic by hand",
                                      rollout_id=active.public.id)
            public, _ = await self._traffic.apply(model=model, update=update, actor=actor,
                                                  then=partial(_no_active_rollout, model=model))
            return public

    # --- the controller --------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the controller's lease and, while this replica holds it, judge every due rollout now and every
        ``tick_s``, logging (never raising) failures; the lease is released when the task is cancelled."""
        keeper = asyncio.create_task(self._lease.keep(), name="registry-controller-lease")
        try:
            while True:
                try:
                    await self.tick()
                except Exception:
                    logger.exception("rollout controller tick failed")
                await asyncio.sleep(self._tick_s)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self._lease.release()

    async def tick(self) -> None:
        """Judge each running rollout whose interval is over, while this replica holds the controller's lease."""
        if not self._lease.held:
            return
        now = utcnow()
        for snapshot in await self._database.transaction(_judged_rollouts):
            if not snapshot.due(now):
                continue
            if not self._lease.held:
                return
            try:
                async with self._locks[snapshot.model]:
                    await self._judge(snapshot.public.id, snapshot.model)
            except MlfleetError as exc:  # e.g. Triton down while moving traffic: judged again next tick
                logger.warning("rollout %d of %s not moved: %s", snapshot.public.id, snapshot.model, exc.detail)
            except Exception:  # e.g. the database failing on this one: the others are still judged this tick
                logger.exception("rollout %d of %s not judged", snapshot.public.id, snapshot.model)

    async def _judge(self, rollout_id: int, model: str) -> None:
        snapshot = await self._database.transaction(_snapshot, model=model, rollout_id=rollout_id)
        now = utcnow()
        if snapshot.public.state.value not in JUDGED or not snapshot.due(now):
            return
        if not await self._policy_in_place(snapshot):
            return
        canary, stable, judgement = await self._numbers(snapshot, now)
        decision = decide(snapshot.position(now), judgement)
        self._metrics.rollout_verdicts.labels(verdict=decision.verdict.value).inc()
        reason = "; ".join(decision.reasons)
        if decision.move in (Move.promote, Move.roll_back, Move.abort):
            await self._finish(snapshot, decision.move, actor=CONTROLLER, reason=reason,
                               step=(decision, canary, stable))
            return
        record = partial(_record, snapshot=snapshot, decision=decision, canary=canary, stable=stable)
        if decision.move is not Move.advance:
            await self._database.transaction(record, canary_percent=snapshot.public.canary_percent)
            return
        percent = snapshot.public.steps[snapshot.public.step_index + 1]
        policy = await self._traffic.get(model=model)
        _, public = await self._traffic.apply(
            model=model, actor=CONTROLLER, reason=reason,
            update=policy_update(policy, stable=snapshot.public.baseline, canary=snapshot.public.candidate,
                                 canary_percent=percent),
            then=lambda session, before: record(session, canary_percent=percent))
        self._announce(RolloutEvent.advanced, public, actor=CONTROLLER, reason=reason)

    async def _numbers(self, snapshot: Snapshot,
                       now: datetime) -> tuple[dict[str, object], dict[str, object], Judgement]:
        """Canary and stable numbers over the interval, and the judgement of them."""
        p = snapshot.public
        try:
            numbers = await self._monitor.window(p.model, start=snapshot.step_started_at.timestamp(),
                                                 end=now.timestamp())
        except MlfleetError as exc:
            return {}, {}, Judgement(Outcome.insufficient, [f"no verdict: {exc.detail}"])
        canary, stable = numbers.get(p.candidate, VersionNumbers()), numbers.get(p.baseline, VersionNumbers())
        judgement = await anyio.to_thread.run_sync(
            lambda: judge(canary, stable, p.checks, min_requests=p.min_requests))
        canary_record = canary.record()
        if judgement.latency_p_value is not None:
            canary_record["latency_p_value"] = round(judgement.latency_p_value, 6)
        return canary_record, stable.record(), judgement

    async def _policy_in_place(self, snapshot: Snapshot) -> bool:
        """Re-apply the rollout's split if the policy differs (a move interrupted by a restart); ``False`` if it did."""
        p = snapshot.public
        policy = await self._traffic.get(model=p.model)
        if (policy.stable, policy.canary, policy.canary_percent) == (p.baseline, p.candidate, p.canary_percent):
            return True
        logger.warning("traffic of %s is not rollout %d's split; re-applying it", p.model, p.id)
        await self._traffic.apply(model=p.model, actor=CONTROLLER, reason=f"re-applied rollout {p.id}'s split",
                                  update=policy_update(policy, stable=p.baseline, canary=p.candidate,
                                                       canary_percent=p.canary_percent),
                                  then=partial(_restart_interval, snapshot=snapshot))
        return False

    async def _finish(self, snapshot: Snapshot, move: Move, *, actor: str, reason: str,
                      step: tuple[Decision, dict, dict] | None = None,
                      mark_failed: bool = True) -> tuple[TrafficPublic, RolloutPublic]:
        """Promote (``Move.promote``), roll back (``Move.roll_back``) or abort (``Move.abort``) the rollout: its end
        and the traffic change in one transaction, 409 if the rollout ended (or, for a verdict, moved) meanwhile."""
        p = snapshot.public
        policy = await self._traffic.get(model=p.model)
        if move is Move.promote:
            state, event, update = RolloutState.promoted, RolloutEvent.promoted, policy_update(policy, stable=p.candidate)
        elif move is Move.roll_back:
            state, event, update = RolloutState.rolled_back, RolloutEvent.rolled_back, policy_update(policy,
                                                                                                     stable=p.baseline)
        else:
            state, event, update = RolloutState.aborted, RolloutEvent.aborted, policy_update(policy, stable=p.baseline)
        traffic, public = await self._traffic.apply(
            model=p.model, update=update, actor=actor, reason=f"rollout {p.id} {state.value}: {reason}",
            then=partial(_end, snapshot=snapshot, state=state, actor=actor, reason=reason, step=step,
                         mark_failed=mark_failed and move is Move.roll_back))
        self._announce(event, public, actor=actor, reason=reason)
        return traffic, public

    async def _active(self, model: str, rollout_id: int) -> Snapshot:
        snapshot = await self._database.transaction(_snapshot, model=model, rollout_id=rollout_id)
        if snapshot.public.state.value not in ACTIVE:
            raise RolloutConflict(f"rollout {rollout_id} of {model!r} is {snapshot.public.state.value}")
        return snapshot

    def _announce(self, event: RolloutEvent, public: RolloutPublic, *, actor: str, reason: str) -> None:
        self._metrics.rollout_events.labels(event=event.value).inc()
        self._metrics.rollout_step_percent.labels(model=public.model).set(public.canary_percent)
        if event is RolloutEvent.rolled_back:
            trigger = "automatic" if actor == CONTROLLER else "manual"
            self._metrics.rollbacks.labels(model=public.model, trigger=trigger).inc()
        self._notifier.notify(RolloutNotice(
            event=event, model=public.model, rollout_id=public.id, candidate=public.candidate,
            baseline=public.baseline, canary_percent=public.canary_percent, actor=actor, reason=reason,
            started_at=public.created_at))


# --- units of work (each runs in one transaction) ------------------------------------------------

def _snapshot(session: Session, *, model: str, rollout_id: int) -> Snapshot:
    row = repository.get_rollout(session, model=require_model(session, name=model), rollout_id=rollout_id)
    if row is None:
        raise NotFound(f"model {model!r} has no rollout {rollout_id}")
    return Snapshot(rollout_public(row), row.step_started_at)


def _judged_rollouts(session: Session) -> list[Snapshot]:
    return [Snapshot(rollout_public(r), r.step_started_at) for r in repository.rollouts_in(session, states=JUDGED)]


def _active_of(session: Session, *, model: str) -> Snapshot | None:
    row = repository.active_rollout(session, model=require_model(session, name=model), states=ACTIVE)
    return Snapshot(rollout_public(row), row.step_started_at) if row is not None else None


def _startable(session: Session, *, model: str, candidate: int, allow_failed: bool) -> TrafficPublic:
    """The model's policy, if a rollout of ``candidate`` may start on it."""
    registered = require_model(session, name=model)
    active = repository.active_rollout(session, model=registered, states=ACTIVE)
    if active is not None:
        raise RolloutConflict(f"rollout {active.id} of {model!r} is already {active.state}", rollout_id=active.id)
    row = repository.get_version(session, model=registered, version=candidate)
    if row is None:
        raise VersionNotFound(f"model {model!r} has no version {candidate}")
    if row.status == VersionStatus.failed.value and not allow_failed:
        raise Conflict(f"version {candidate} of {model!r} failed a rollout (the controller rolled it back): "
                       "start with allow_failed=true to try it again")
    policy = traffic_public(model, repository.get_policy(session, model=registered))
    if policy.stable is None:
        raise Conflict(f"model {model!r} has no stable version yet: set its traffic before rolling out")
    if policy.stable == candidate:
        raise Conflict(f"version {candidate} is already the stable version of {model!r}")
    return policy


def _refuse_failed(session: Session, *, model: str, update: TrafficUpdate) -> None:
    """409 when ``update`` names a version a rollout failed that the current policy does not already serve."""
    registered = require_model(session, name=model)
    policy = repository.get_policy(session, model=registered)
    served = {v for v in (policy.stable, policy.canary, policy.shadow) if v is not None} if policy else set()
    rows = repository.get_versions(session, model=registered, versions=update.versions - served)
    failed = sorted(v for v, row in rows.items() if row.status == VersionStatus.failed.value)
    if failed:
        raise Conflict(f"version {', '.join(map(str, failed))} of {model!r} failed a rollout (the controller rolled it "
                       "back): set the traffic with allow_failed=true to serve it anyway")


def _no_active_rollout(session: Session, before: TrafficPublic, *, model: str) -> None:
    active = repository.active_rollout(session, model=require_model(session, name=model), states=ACTIVE)
    if active is not None:
        raise RolloutConflict(f"rollout {active.id} of {model!r} started meanwhile and owns its traffic",
                              rollout_id=active.id)


def _unchanged_traffic(session: Session, before: TrafficPublic, *, model: str, revision: int) -> None:
    """Refuse a change computed from the policy at ``revision`` once the policy moved on (or a rollout started)."""
    _no_active_rollout(session, before, model=model)
    if before.revision != revision:
        raise RolloutConflict(f"the traffic of {model!r} changed meanwhile (revision {before.revision}, "
                              f"not {revision}); look at it again")


def _create(session: Session, before: TrafficPublic, *, model: str, body: RolloutCreate, baseline: int,
            revision: int, actor: str) -> RolloutPublic:
    """Insert the rollout; 409 if one started meanwhile (the partial unique index refuses a second active one) or
    the traffic it started from changed."""
    registered = require_model(session, name=model)
    _unchanged_traffic(session, before, model=model, revision=revision)
    now = utcnow()
    try:
        row = repository.add_rollout(
            session, model=registered, candidate=body.candidate, baseline=baseline, state=RolloutState.running.value,
            step_index=0, canary_percent=body.steps[0], steps=list(body.steps), interval_s=body.interval_s,
            min_requests=body.min_requests, checks=body.checks.model_dump(), max_failures=body.max_failures,
            failures=0, require_approval=body.require_approval, approved=False,
            progress_deadline_s=body.progress_deadline_s, step_started_at=now,
            reason="started", created_by=actor, created_at=now, updated_at=now,
        )
    except IntegrityError:
        raise RolloutConflict(f"a rollout of {model!r} started meanwhile") from None
    repository.add_audit(session, actor=actor, action="rollout.start", model=model, version=body.candidate,
                         detail={"rollout_id": row.id, "baseline": baseline, **body.model_dump(mode="json")})
    return rollout_public(row)


def _transition(session: Session, *, model: str, rollout_id: int, expected: RolloutState, state: RolloutState,
                actor: str, action: str, reason: str, restart_interval: bool = False,
                approve: bool = False) -> RolloutPublic:
    """Move the rollout from ``expected`` to ``state``; 409 if it is no longer in ``expected``."""
    row = repository.lock_rollout(session, rollout_id=rollout_id)
    assert row is not None
    if row.state != expected.value:
        raise RolloutConflict(f"rollout {rollout_id} of {model!r} is {row.state} now, no longer {expected.value}",
                              rollout_id=rollout_id)
    row.state, row.reason, row.updated_at = state.value, reason, utcnow()
    if restart_interval:
        row.step_started_at = row.updated_at
    if approve:
        row.approved = True
    repository.add_audit(session, actor=actor, action=action, model=model, version=row.candidate,
                         detail={"rollout_id": row.id, "state": row.state, "reason": reason})
    return rollout_public(row)


def _restart_interval(session: Session, before: TrafficPublic, *, snapshot: Snapshot) -> None:
    _locked_unchanged(session, snapshot).step_started_at = utcnow()


def _unchanged(row: Rollout | None, snapshot: Snapshot) -> bool:
    p = snapshot.public
    return row is not None and (row.state, row.step_index, row.updated_at) == (p.state.value, p.step_index, p.updated_at)


def _locked_unchanged(session: Session, snapshot: Snapshot) -> Rollout:
    """The rollout's row, locked; 409 if it moved since ``snapshot`` (the controller's verdict is then dropped)."""
    row = repository.lock_rollout(session, rollout_id=snapshot.public.id)
    if row is None or not _unchanged(row, snapshot):
        raise RolloutConflict(f"rollout {snapshot.public.id} of {snapshot.model!r} changed while it was judged",
                              rollout_id=snapshot.public.id)
    return row


def _locked_active(session: Session, snapshot: Snapshot) -> Rollout:
    """The rollout's row, locked; 409 if it ended since ``snapshot``."""
    row = repository.lock_rollout(session, rollout_id=snapshot.public.id)
    assert row is not None
    if row.state not in ACTIVE:
        raise RolloutConflict(f"rollout {row.id} of {snapshot.model!r} is {row.state} now", rollout_id=row.id)
    return row


def _record(session: Session, *, snapshot: Snapshot, decision: Decision, canary: dict, stable: dict,
            canary_percent: float) -> RolloutPublic:
    """Write one verdict; 409 (and nothing written) if the rollout changed since ``snapshot``."""
    row = _locked_unchanged(session, snapshot)
    _add_step(session, row, decision, canary, stable)
    now = utcnow()
    if decision.move is Move.advance:
        row.step_index += 1
    if decision.move is Move.wait_for_approval:
        row.state = RolloutState.awaiting_approval.value
    if decision.verdict is not Verdict.hold or decision.move is Move.wait_for_approval:
        row.step_started_at = now  # a hold for lack of data keeps its interval open so requests accumulate
    row.canary_percent, row.failures, row.updated_at = canary_percent, decision.failures, now
    row.reason = "; ".join(decision.reasons)
    if decision.verdict is not Verdict.hold:
        repository.add_audit(session, actor=CONTROLLER, action=f"rollout.{decision.verdict.value}", model=row.model.name,
                             version=row.candidate,
                             detail={"rollout_id": row.id, "canary_percent": canary_percent, "reasons": decision.reasons,
                                     "canary": canary, "stable": stable})
    session.flush()
    return rollout_public(row)


def _add_step(session: Session, row: Rollout, decision: Decision, canary: dict, stable: dict) -> None:
    """Record a verdict in the rollout's history. A hold keeps the interval open and is judged again every tick: one
    row for a run of holds at one percentage, its numbers and reasons the latest, not one row a second (and every
    rollout read loading them all)."""
    last = row.history[-1] if row.history else None
    if decision.verdict is Verdict.hold and last is not None and last.verdict == Verdict.hold.value \
            and last.canary_percent == row.canary_percent:
        last.at, last.reasons, last.canary, last.stable = utcnow(), decision.reasons, canary, stable
        return
    repository.add_rollout_step(session, rollout=row, canary_percent=row.canary_percent,
                                verdict=decision.verdict.value, reasons=decision.reasons, canary=canary, stable=stable)


def _end(session: Session, before: TrafficPublic, *, snapshot: Snapshot, state: RolloutState, actor: str,
         reason: str, step: tuple[Decision, dict, dict] | None, mark_failed: bool) -> RolloutPublic:
    """End the rollout: a verdict (``step``) only if it has not moved since ``snapshot``, an admin action only if it
    is still active."""
    row = _locked_unchanged(session, snapshot) if step is not None else _locked_active(session, snapshot)
    if step is not None:
        decision, canary, stable = step
        _add_step(session, row, decision, canary, stable)
        row.failures = decision.failures
    if state is RolloutState.promoted:
        row.canary_percent = 100.0
    else:
        row.canary_percent = 0.0
    row.state, row.reason, row.updated_at = state.value, reason, utcnow()
    if mark_failed:
        repository.set_version_status(session, model=row.model, version=row.candidate, status=VersionStatus.failed.value)
    elif state is RolloutState.promoted:  # a candidate that failed before and was tried again has passed now
        repository.set_version_status(session, model=row.model, version=row.candidate,
                                      status=VersionStatus.registered.value)
    action = {RolloutState.promoted: "rollout.promote", RolloutState.rolled_back: "rollout.rollback",
              RolloutState.aborted: "rollout.abort"}[state]
    repository.add_audit(session, actor=actor, action=action, model=row.model.name, version=row.candidate,
                         detail={"rollout_id": row.id, "baseline": row.baseline, "reason": reason,
                                 "version_marked_failed": mark_failed})
    session.flush()
    return rollout_public(row)


def _rollback_target(session: Session, *, model: str) -> tuple[TrafficPublic, int]:
    """The policy and the previous stable to go back to; 409 when there is none, or when the model's last traffic
    change was a rollout's rollback or abort: that already undid the change a caller meant (a second click, a second
    operator, or a click after the controller's own rollback), and going on would demote the stable it kept."""
    registered = require_model(session, name=model)
    row = repository.get_policy(session, model=registered)
    if row is None or row.previous_stable is None:
        raise Conflict(f"model {model!r} has no previous stable version to roll back to")
    latest = repository.latest_rollout(session, model=registered)
    if (latest is not None and latest.state in (RolloutState.rolled_back.value, RolloutState.aborted.value)
            and latest.updated_at >= row.updated_at):
        raise Conflict(f"the last traffic change of {model!r} was rollout {latest.id}'s end ({latest.state}): its "
                       f"canary v{latest.candidate} is already off; rolling back again would take stable v{row.stable} "
                       f"back to v{row.previous_stable}: set the traffic for that")
    return traffic_public(model, row), row.previous_stable
