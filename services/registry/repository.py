"""Every query of the registry. Functions take the session first and everything else by keyword."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, defer

from services.registry.models import (
    POLICY_REVISION_COUNTER,
    ApiKey,
    AuditEvent,
    Lease,
    ModelVersion,
    RegisteredModel,
    RevisionCounter,
    Rollout,
    RolloutStep,
    TrafficPolicy,
    utcnow,
)


def get_model(session: Session, *, name: str) -> RegisteredModel | None:
    return session.scalars(select(RegisteredModel).where(RegisteredModel.name == name)).one_or_none()


def lock_model(session: Session, *, name: str) -> RegisteredModel | None:
    """The model, its row locked until the transaction ends (``FOR NO KEY UPDATE`` on PostgreSQL, so inserts
    referencing it still pass): writers of one model's traffic queue up here, across registry replicas.
    SQLite has no row locks; its transactions start with ``BEGIN IMMEDIATE`` and serialise as a whole."""
    statement = select(RegisteredModel).where(RegisteredModel.name == name).with_for_update(key_share=True)
    return session.scalars(statement.execution_options(populate_existing=True)).one_or_none()


def list_models(session: Session) -> list[RegisteredModel]:
    return list(session.scalars(select(RegisteredModel).order_by(RegisteredModel.name)))


def add_model(session: Session, *, name: str, description: str, gates: dict[str, Any]) -> RegisteredModel:
    model = RegisteredModel(name=name, description=description, gates=gates, last_version=0)
    session.add(model)
    session.flush()
    return model


def next_version_number(session: Session, *, model: RegisteredModel) -> int:
    """Hand out the model's next version number; the row lock serialises concurrent uploads."""
    statement = (
        update(RegisteredModel)
        .where(RegisteredModel.id == model.id)
        .values(last_version=RegisteredModel.last_version + 1)
        .returning(RegisteredModel.last_version)
        .execution_options(synchronize_session=False)
    )
    return session.execute(statement).scalar_one()


def add_version(session: Session, *, model: RegisteredModel, version: int, sha256: str, size_bytes: int, status: str,
                signature: dict[str, Any], metrics: dict[str, float], lineage: dict[str, Any],
                reference_profile: dict[str, Any], description: str,
                fault_injection: dict[str, Any] | None = None) -> ModelVersion:
    row = ModelVersion(
        model=model, version=version, sha256=sha256, size_bytes=size_bytes, status=status, signature=signature,
        metrics=metrics, lineage=lineage, reference_profile=reference_profile, description=description,
        fault_injection=fault_injection or {},
    )
    session.add(row)
    session.flush()
    return row


def get_version(session: Session, *, model: RegisteredModel, version: int) -> ModelVersion | None:
    statement = select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == version)
    return session.scalars(statement).one_or_none()


def get_versions(session: Session, *, model: RegisteredModel, versions: Iterable[int]) -> dict[int, ModelVersion]:
    statement = select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version.in_(list(versions)))
    return {row.version: row for row in session.scalars(statement)}


def version_numbers(session: Session, *, model: RegisteredModel) -> list[int]:
    """Every registered version of ``model``, ascending (the numbers only)."""
    statement = select(ModelVersion.version).where(ModelVersion.model_id == model.id).order_by(ModelVersion.version)
    return list(session.scalars(statement))


def list_versions(session: Session, *, model: RegisteredModel, with_profiles: bool = True) -> list[ModelVersion]:
    """Oldest first; ``with_profiles=False`` leaves the reference profiles (up to megabytes each) in the database."""
    statement = select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.version)
    if not with_profiles:
        statement = statement.options(defer(ModelVersion.reference_profile, raiseload=True))
    return list(session.scalars(statement))


def get_policy(session: Session, *, model: RegisteredModel) -> TrafficPolicy | None:
    return session.get(TrafficPolicy, model.id)


def list_policies(session: Session) -> list[TrafficPolicy]:
    statement = select(TrafficPolicy).join(TrafficPolicy.model).order_by(RegisteredModel.name)
    return list(session.scalars(statement))


def next_policy_revision(session: Session) -> int:
    """The next fleet-wide policy revision; concurrent transactions wait on the counter's row lock."""
    statement = (
        update(RevisionCounter)
        .where(RevisionCounter.name == POLICY_REVISION_COUNTER)
        .values(value=RevisionCounter.value + 1)
        .returning(RevisionCounter.value)
        .execution_options(synchronize_session=False)
    )
    return session.execute(statement).scalar_one()


def save_policy(session: Session, *, model: RegisteredModel, stable: int, canary: int | None, canary_percent: float,
                shadow: int | None, previous_stable: int | None, previous_stable_until: datetime | None,
                revision: int) -> TrafficPolicy:
    policy = session.get(TrafficPolicy, model.id) or TrafficPolicy(model=model)
    policy.stable, policy.canary, policy.canary_percent, policy.shadow = stable, canary, canary_percent, shadow
    policy.previous_stable, policy.previous_stable_until = previous_stable, previous_stable_until
    policy.revision, policy.updated_at = revision, utcnow()
    session.add(policy)
    session.flush()
    return policy


def add_audit(session: Session, *, actor: str, action: str, model: str | None, version: int | None = None,
              detail: dict[str, Any] | None = None) -> AuditEvent:
    event = AuditEvent(actor=actor, action=action, model=model, version=version, detail=detail or {})
    session.add(event)
    session.flush()
    return event


def list_audit(session: Session, *, model: str | None, limit: int, actor: str | None = None,
               action: str | None = None, before_id: int | None = None) -> list[AuditEvent]:
    """The newest ``limit`` events older than ``before_id``, newest first, optionally of one model, one actor, and one
    action (or, ending in ``.``, a family of actions)."""
    statement = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if model is not None:
        statement = statement.where(AuditEvent.model == model)
    if actor is not None:
        statement = statement.where(AuditEvent.actor == actor)
    if action is not None:
        matches = AuditEvent.action.startswith(action, autoescape=True) if action.endswith(".") else \
            AuditEvent.action == action
        statement = statement.where(matches)
    if before_id is not None:
        statement = statement.where(AuditEvent.id < before_id)
    return list(session.scalars(statement))


def set_version_status(session: Session, *, model: RegisteredModel, version: int, status: str) -> None:
    row = get_version(session, model=model, version=version)
    if row is not None:
        row.status = status


# --- API keys -----------------------------------------------------------------------------------

def add_key(session: Session, *, name: str, role: str, key_hash: str, prefix: str, created_by: str) -> ApiKey:
    key = ApiKey(name=name, role=role, key_hash=key_hash, prefix=prefix, created_by=created_by)
    session.add(key)
    session.flush()
    return key


def get_key_by_hash(session: Session, *, key_hash: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).one_or_none()


def get_key(session: Session, *, key_id: int) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def lock_active_keys(session: Session, *, role: str) -> list[ApiKey]:
    """The unrevoked keys of ``role``, locked until the transaction ends (so two revocations queue up)."""
    query = select(ApiKey).where(ApiKey.role == role, ApiKey.revoked_at.is_(None)).order_by(ApiKey.id)
    return list(session.scalars(query.with_for_update()))


# --- Rollouts -----------------------------------------------------------------------------------

def add_rollout(session: Session, **fields: Any) -> Rollout:
    rollout = Rollout(**fields)
    session.add(rollout)
    session.flush()
    return rollout


def get_rollout(session: Session, *, model: RegisteredModel, rollout_id: int) -> Rollout | None:
    rollout = session.get(Rollout, rollout_id)
    return rollout if rollout is not None and rollout.model_id == model.id else None


def lock_rollout(session: Session, *, rollout_id: int) -> Rollout | None:
    """The rollout as committed now, its row locked until the transaction ends."""
    statement = select(Rollout).where(Rollout.id == rollout_id).with_for_update(of=Rollout)
    return session.scalars(statement.execution_options(populate_existing=True)).unique().one_or_none()


def list_rollouts(session: Session, *, model: RegisteredModel, state: str | None = None,
                  limit: int | None = None) -> list[Rollout]:
    """Newest first."""
    statement = select(Rollout).where(Rollout.model_id == model.id).order_by(Rollout.id.desc()).limit(limit)
    if state is not None:
        statement = statement.where(Rollout.state == state)
    return list(session.scalars(statement))


def active_rollout(session: Session, *, model: RegisteredModel, states: Iterable[str]) -> Rollout | None:
    statement = select(Rollout).where(Rollout.model_id == model.id, Rollout.state.in_(list(states)))
    return session.scalars(statement.order_by(Rollout.id.desc()).limit(1)).one_or_none()


def latest_rollout(session: Session, *, model: RegisteredModel) -> Rollout | None:
    statement = select(Rollout).where(Rollout.model_id == model.id).order_by(Rollout.id.desc()).limit(1)
    return session.scalars(statement).unique().one_or_none()


def rollouts_in(session: Session, *, states: Iterable[str]) -> list[Rollout]:
    return list(session.scalars(select(Rollout).where(Rollout.state.in_(list(states))).order_by(Rollout.id)))


def add_rollout_step(session: Session, *, rollout: Rollout, canary_percent: float, verdict: str, reasons: list[str],
                     canary: dict[str, Any], stable: dict[str, Any]) -> RolloutStep:
    step = RolloutStep(canary_percent=canary_percent, verdict=verdict, reasons=reasons, canary=canary, stable=stable)
    rollout.history.append(step)
    session.flush()
    return step


# --- Leases -------------------------------------------------------------------------------------

def take_lease(session: Session, *, name: str, holder: str, now: datetime, expires_at: datetime) -> bool:
    """Give lease ``name`` to ``holder`` until ``expires_at`` if ``holder`` has it or it expired; whether it did.

    One conditional UPDATE: concurrent callers are serialised by the row lock, and the one
    that waited sees the winner's row and changes nothing.
    """
    statement = (
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at <= now))
        .values(holder=holder, expires_at=expires_at)
        .execution_options(synchronize_session=False)
    )
    return session.execute(statement).rowcount == 1


def release_lease(session: Session, *, name: str, holder: str, now: datetime) -> None:
    """Let lease ``name`` expire now, if ``holder`` has it."""
    statement = (
        update(Lease).where(Lease.name == name, Lease.holder == holder).values(expires_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(statement)

