"""SQLAlchemy tables of the registry: models, versions, traffic policies, revisions, audit, API keys, rollouts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

POLICY_REVISION_COUNTER = "policy_revision"
CONTROLLER_LEASE = "rollout-controller"
ACTIVE_STATES_SQL = "state IN ('running', 'paused', 'awaiting_approval')"
"""Rollout states in which a rollout owns its model's traffic (a partial unique index allows one per model)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[float]: JSON, list[str]: JSON, datetime: UtcDateTime}


class RegisteredModel(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    gates: Mapped[dict[str, Any]] = mapped_column(doc="Validation gates, e.g. {'min_auc': 0.9, 'min_accuracy': 0.85}.")
    last_version: Mapped[int] = mapped_column(Integer, default=0, doc="Highest version number handed out.")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    signature: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    lineage: Mapped[dict[str, Any]]
    reference_profile: Mapped[dict[str, Any]]
    fault_injection: Mapped[dict[str, Any] | None] = mapped_column(
        default=dict, doc="Faults Triton injects into this version (delay, failures), for rollout rehearsals.")
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    model: Mapped[RegisteredModel] = relationship(lazy="joined")


class TrafficPolicy(Base):
    """How a model's traffic is split; one row per model that has traffic set."""

    __tablename__ = "traffic_policies"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    stable: Mapped[int] = mapped_column(Integer)
    canary: Mapped[int | None] = mapped_column(Integer)
    canary_percent: Mapped[float] = mapped_column(Float, default=0.0)
    shadow: Mapped[int | None] = mapped_column(Integer)
    previous_stable: Mapped[int | None] = mapped_column(Integer, doc="Where a rollback goes back to.")
    previous_stable_until: Mapped[datetime | None] = mapped_column(
        default=None, doc="Until when the previous stable stays loaded on Triton for instant rollback; "
                          "none (e.g. a row from before retention existed) means it is not kept loaded.")
    revision: Mapped[int] = mapped_column(BigInteger, doc="Taken from the fleet-wide policy revision counter.")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    model: Mapped[RegisteredModel] = relationship(lazy="joined")

    def retains_previous_stable(self, now: datetime) -> bool:
        """Whether the previous stable is still kept loaded at ``now``."""
        return (self.previous_stable is not None and self.previous_stable_until is not None
                and now < self.previous_stable_until)

    def loaded_versions(self, now: datetime) -> list[int]:
        """Every version Triton must serve for this policy at ``now``, ascending: stable, canary, shadow, and the
        previous stable while its retention lasts."""
        named = {self.stable, self.canary, self.shadow}
        if self.retains_previous_stable(now):
            named.add(self.previous_stable)
        return sorted(v for v in named if v is not None)


class Lease(Base):
    """A lease one registry replica holds at a time (e.g. the rollout controller's), taken and renewed with a
    conditional UPDATE: it goes to ``holder`` only if ``holder`` has it already or it expired."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255), default="")
    expires_at: Mapped[datetime] = mapped_column(doc="The lease is free from this moment unless renewed.")


class RevisionCounter(Base):
    """Fleet-wide counters; incremented with an atomic UPDATE so concurrent writers never share a value."""

    __tablename__ = "revision_counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class AuditEvent(Base):
    """One write to the registry. ``model`` is a name, not a key, so history outlives its model."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_model_id", "model", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(63))
    version: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]]


class ApiKey(Base):
    """An API key: only the sha256 of the token is stored; the token is shown once at creation.

    Names need not be unique: rotating a key means creating a second one with the same name,
    switching callers over, then revoking the first.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), doc="First characters of the key, to recognise it in listings.")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(
        Integer, default=None, doc="Requests per minute this key may make to each service replica; none: unlimited.")


class Rollout(Base):
    """A progressive rollout of ``candidate`` against ``baseline``; the controller resumes it from here."""

    __tablename__ = "rollouts"
    __table_args__ = (
        Index("ix_rollouts_state", "state"),
        Index("ix_rollouts_model_id", "model_id", "id"),
        Index("uq_rollouts_one_active_per_model", "model_id", unique=True,
              sqlite_where=text(ACTIVE_STATES_SQL), postgresql_where=text(ACTIVE_STATES_SQL)),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    candidate: Mapped[int] = mapped_column(Integer)
    baseline: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(32))
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    canary_percent: Mapped[float] = mapped_column(Float)
    steps: Mapped[list[float]]
    interval_s: Mapped[float] = mapped_column(Float)
    min_requests: Mapped[int] = mapped_column(Integer)
    checks: Mapped[dict[str, Any]]
    max_failures: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    require_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    approved: Mapped[bool] = mapped_column(Boolean, default=False)
    progress_deadline_s: Mapped[float | None] = mapped_column(Float, nullable=True,
                                                              doc="NULL (rollouts from before revision 0004): none.")
    step_started_at: Mapped[datetime] = mapped_column(doc="Start of the interval the next verdict judges.")
    reason: Mapped[str] = mapped_column(Text, default="", doc="Why the rollout is in its state.")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    model: Mapped[RegisteredModel] = relationship(lazy="joined")
    history: Mapped[list[RolloutStep]] = relationship(
        lazy="selectin", order_by="RolloutStep.id", cascade="all, delete-orphan")


class RolloutStep(Base):
    """One verdict of the controller, with the numbers it was based on."""

    __tablename__ = "rollout_steps"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    canary_percent: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[str]]
    canary: Mapped[dict[str, Any]]
    stable: Mapped[dict[str, Any]]
