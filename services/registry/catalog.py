"""Models and their versions: create, register (gate, validate, store), read; plus the audit log."""

from __future__ import annotations

import anyio.to_thread
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.errors import ModelNotFound, PayloadTooLarge, VersionNotFound, VersionRejected
from services.common.schemas import Signature
from services.registry import repository
from services.registry.artifacts import ArtifactStore, StoredArtifact
from services.registry.database import Database
from services.registry.errors import InvalidMetadata, ModelExists
from services.registry.gates import gate_failures
from services.registry.models import AuditEvent, ModelVersion, RegisteredModel
from services.registry.onnx_validation import validate_onnx
from services.registry.schemas import (
    AuditList,
    AuditPublic,
    FaultInjection,
    Gates,
    Lineage,
    ModelCreate,
    ModelList,
    ModelPublic,
    ModelUpdate,
    VersionCreate,
    VersionList,
    VersionPublic,
    VersionSummary,
    VersionStatus,
)
from services.registry.telemetry import RegistryMetrics


def parse_version_metadata(text: str) -> VersionCreate:
    """The ``metadata`` form part as a :class:`VersionCreate`, or :class:`InvalidMetadata` (422)."""
    try:
        return VersionCreate.model_validate_json(text)
    except ValidationError as exc:
        errors = [{"loc": ["metadata", *map(str, e["loc"])], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise InvalidMetadata("metadata is not a valid VersionCreate JSON document", errors=errors) from None


def model_public(row: RegisteredModel) -> ModelPublic:
    return ModelPublic(name=row.name, description=row.description, gates=Gates(**row.gates), created_at=row.created_at)


def version_summary(row: ModelVersion) -> VersionSummary:
    return VersionSummary(
        model=row.model.name, version=row.version, sha256=row.sha256, size_bytes=row.size_bytes,
        status=VersionStatus(row.status), signature=Signature.model_validate(row.signature), metrics=row.metrics,
        lineage=Lineage.model_validate(row.lineage),
        fault_injection=FaultInjection.model_validate(row.fault_injection or {}),
        description=row.description, created_at=row.created_at,
    )


def version_public(row: ModelVersion) -> VersionPublic:
    return VersionPublic(**dict(version_summary(row)), reference_profile=row.reference_profile)


def audit_public(row: AuditEvent) -> AuditPublic:
    return AuditPublic(id=row.id, at=row.at, actor=row.actor, action=row.action, model=row.model,
                       version=row.version, detail=row.detail)


def require_model(session: Session, *, name: str) -> RegisteredModel:
    model = repository.get_model(session, name=name)
    if model is None:
        raise ModelNotFound(f"model {name!r} does not exist")
    return model


def require_version(session: Session, *, name: str, version: int) -> ModelVersion:
    row = repository.get_version(session, model=require_model(session, name=name), version=version)
    if row is None:
        raise VersionNotFound(f"model {name!r} has no version {version}")
    return row


class Catalog:
    def __init__(self, *, database: Database, artifacts: ArtifactStore, metrics: RegistryMetrics,
                 max_artifact_bytes: int) -> None:
        self._database = database
        self._artifacts = artifacts
        self._metrics = metrics
        self.max_artifact_bytes = max_artifact_bytes

    async def create_model(self, body: ModelCreate, *, actor: str) -> ModelPublic:
        try:
            return await self._database.transaction(_create_model, body=body, actor=actor)
        except IntegrityError:
            raise ModelExists(f"model {body.name!r} already exists") from None

    async def update_model(self, name: str, body: ModelUpdate, *, actor: str) -> ModelPublic:
        return await self._database.transaction(_update_model, name=name, body=body, actor=actor)

    async def list_models(self) -> ModelList:
        def work(session: Session) -> list[ModelPublic]:
            return [model_public(m) for m in repository.list_models(session)]

        models = await self._database.transaction(work)
        return ModelList(data=models, count=len(models))

    async def get_model(self, *, name: str) -> ModelPublic:
        def work(session: Session) -> ModelPublic:
            return model_public(require_model(session, name=name))

        return await self._database.transaction(work)

    async def register_version(self, *, model: str, artifact: bytes, metadata: VersionCreate, actor: str) -> VersionPublic:
        """Gate the metrics, validate the ONNX file, store it, and record the version with the next number."""
        if len(artifact) > self.max_artifact_bytes:
            raise PayloadTooLarge(f"the artifact exceeds {self.max_artifact_bytes} bytes")
        gates = await self.get_model(name=model)
        reasons = gate_failures(gates.gates, metadata.metrics)
        if reasons:
            await self._database.transaction(_audit_rejection, model=model, metadata=metadata, reasons=reasons, actor=actor)
            self._metrics.versions.labels(outcome="rejected").inc()
            raise VersionRejected(f"version of {model!r} fails its validation gates: " + "; ".join(reasons), reasons=reasons)
        await anyio.to_thread.run_sync(lambda: validate_onnx(artifact, signature_width=len(metadata.signature.inputs),
                                                              n_classes=len(metadata.signature.output.classes)))
        stored = await anyio.to_thread.run_sync(self._artifacts.put, artifact)
        version = await self._database.transaction(_add_version, model=model, stored=stored, metadata=metadata, actor=actor)
        self._metrics.versions.labels(outcome="registered").inc()
        return version

    async def list_versions(self, *, model: str) -> VersionList:
        def work(session: Session) -> list[VersionSummary]:
            rows = repository.list_versions(session, model=require_model(session, name=model), with_profiles=False)
            return [version_summary(v) for v in rows]

        versions = await self._database.transaction(work)
        return VersionList(data=versions, count=len(versions))

    async def get_version(self, *, model: str, version: int) -> VersionPublic:
        def work(session: Session) -> VersionPublic:
            return version_public(require_version(session, name=model, version=version))

        return await self._database.transaction(work)

    async def artifact(self, *, model: str, version: int) -> tuple[VersionPublic, bytes]:
        """The version and its ONNX bytes, verified against the recorded sha256."""
        public = await self.get_version(model=model, version=version)
        return public, await anyio.to_thread.run_sync(self._artifacts.read, public.sha256)

    async def audit(self, *, model: str | None, limit: int, actor: str | None = None, action: str | None = None,
                    before_id: int | None = None) -> AuditList:
        def work(session: Session) -> list[AuditPublic]:
            rows = repository.list_audit(session, model=model, actor=actor, action=action, before_id=before_id,
                                         limit=limit)
            return [audit_public(e) for e in rows]

        events = await self._database.transaction(work)
        return AuditList(data=events, count=len(events),
                         next_before_id=events[-1].id if len(events) == limit else None)


def _create_model(session: Session, *, body: ModelCreate, actor: str) -> ModelPublic:
    if repository.get_model(session, name=body.name) is not None:
        raise ModelExists(f"model {body.name!r} already exists")
    model = repository.add_model(session, name=body.name, description=body.description, gates=body.gates.model_dump())
    repository.add_audit(session, actor=actor, action="model.create", model=model.name,
                         detail={"description": body.description, "gates": body.gates.model_dump()})
    return model_public(model)


def _update_model(session: Session, *, name: str, body: ModelUpdate, actor: str) -> ModelPublic:
    model = repository.lock_model(session, name=name)  # two admins' changes queue, each audited against the other's
    if model is None:
        raise ModelNotFound(f"model {name!r} does not exist")
    before = {"description": model.description, "gates": dict(model.gates)}
    if body.description is not None:
        model.description = body.description
    if body.gates is not None:
        model.gates = {**model.gates, **body.gates.model_dump(exclude_unset=True)}
    after = {"description": model.description, "gates": dict(model.gates)}
    if after != before:  # setting what is already set leaves no entry
        repository.add_audit(session, actor=actor, action="model.update", model=name,
                             detail={"before": before, "after": after})
    return model_public(model)


def _add_version(session: Session, *, model: str, stored: StoredArtifact, metadata: VersionCreate, actor: str) -> VersionPublic:
    registered = require_model(session, name=model)
    number = repository.next_version_number(session, model=registered)
    row = repository.add_version(
        session, model=registered, version=number, sha256=stored.sha256, size_bytes=stored.size_bytes,
        status=VersionStatus.registered.value, signature=metadata.signature.model_dump(mode="json"),
        metrics=metadata.metrics, lineage=metadata.lineage.model_dump(mode="json"),
        reference_profile=metadata.reference_profile, description=metadata.description,
        fault_injection=metadata.fault_injection.model_dump() if metadata.fault_injection.active else {},
    )
    detail = {"sha256": stored.sha256, "size_bytes": stored.size_bytes, "metrics": metadata.metrics}
    if metadata.fault_injection.active:
        detail["fault_injection"] = metadata.fault_injection.model_dump()
    repository.add_audit(session, actor=actor, action="version.register", model=model, version=number, detail=detail)
    return version_public(row)


def _audit_rejection(session: Session, *, model: str, metadata: VersionCreate, reasons: list[str], actor: str) -> None:
    repository.add_audit(session, actor=actor, action="version.reject", model=model,
                         detail={"reasons": reasons, "metrics": metadata.metrics})
