"""HTTP routes of the registry: parse, call the domain, shape the answer."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, UploadFile, status
from fastapi.responses import Response

from services.common.errors import PROBLEM_JSON, PayloadTooLarge
from services.common.schemas import MODEL_NAME_PATTERN, RoutingTable
from services.registry.catalog import parse_version_metadata
from services.common.auth import Identity
from services.registry.deps import (
    AdminDep,
    CatalogDep,
    DeployerDep,
    KeyCheckDep,
    KeysDep,
    RolloutsDep,
    ScientistDep,
    TrafficDep,
    ViewerDep,
)
from services.registry.schemas import (
    AuditList,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyPublic,
    ModelCreate,
    ModelList,
    ModelPublic,
    ModelUpdate,
    Problem,
    Reason,
    RolloutCreate,
    RolloutList,
    RolloutPublic,
    RolloutState,
    TrafficPublic,
    TrafficUpdate,
    VersionList,
    VersionPublic,
)

ModelName = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="Registered model name.")]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1, description="Version number within the model.")]
RolloutId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Rollout id.")]
KeyId = Annotated[int, Path(ge=1, le=2**63 - 1, description="API key id.")]
AllowFailed = Annotated[bool, Query(description="Serve a version a rollout failed (the controller rolled it back) "
                                                "anyway, e.g. once what failed it is fixed.")]


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem+json errors a route can answer."""
    schema = Problem.model_json_schema()
    return {s: {"description": HTTPStatus(s).phrase, "content": {PROBLEM_JSON: {"schema": schema}}}
            for s in (401, 403, 429, *statuses)}


models = APIRouter(prefix="/v1/models", tags=["models"])
versions = APIRouter(prefix="/v1/models/{model}/versions", tags=["versions"])
traffic = APIRouter(prefix="/v1/models/{model}/traffic", tags=["traffic"])
rollouts = APIRouter(prefix="/v1/models/{model}/rollouts", tags=["rollouts"])
routes = APIRouter(prefix="/v1/routes", tags=["routes"])
audit = APIRouter(prefix="/v1/audit", tags=["audit"])
keys = APIRouter(prefix="/v1/keys", tags=["keys"])
auth = APIRouter(prefix="/v1/auth", tags=["auth"])


@models.post("", operation_id="models-create", status_code=status.HTTP_201_CREATED, responses=problems(409, 422))
async def create_model(body: ModelCreate, catalog: CatalogDep, caller: ScientistDep) -> ModelPublic:
    return await catalog.create_model(body, actor=caller.name)


@models.patch("/{model}", operation_id="models-update", responses=problems(404, 422))
async def update_model(model: ModelName, body: ModelUpdate, catalog: CatalogDep, caller: AdminDep) -> ModelPublic:
    """Change a model's description or validation gates (admin; audited with both values)."""
    return await catalog.update_model(model, body, actor=caller.name)


@models.get("", operation_id="models-list", responses=problems())
async def list_models(catalog: CatalogDep, _: ViewerDep) -> ModelList:
    return await catalog.list_models()


@models.get("/{model}", operation_id="models-get", responses=problems(404, 422))
async def get_model(model: ModelName, catalog: CatalogDep, _: ViewerDep) -> ModelPublic:
    return await catalog.get_model(name=model)


MAX_METADATA_BYTES = 16 * 1024 * 1024
"""Largest ``metadata`` part of a version upload. Starlette's default for a form field (1 MiB) is too small for the
reference profile of a model with more than about a hundred inputs (a sample of 500 values per input)."""


@versions.post("", operation_id="versions-register", status_code=status.HTTP_201_CREATED,
               responses=problems(400, 404, 413, 422), form_limits={"max_part_size": MAX_METADATA_BYTES})
async def register_version(
    model: ModelName,
    artifact: Annotated[UploadFile, File(description="The ONNX model file.")],
    metadata: Annotated[str, Form(description="A JSON `VersionCreate` document: signature, metrics, lineage, …")],
    catalog: CatalogDep,
    caller: ScientistDep,
) -> VersionPublic:
    if artifact.size is not None and artifact.size > catalog.max_artifact_bytes:
        raise PayloadTooLarge(f"the artifact exceeds {catalog.max_artifact_bytes} bytes")
    body = parse_version_metadata(metadata)
    data = await artifact.read(catalog.max_artifact_bytes + 1)
    return await catalog.register_version(model=model, artifact=data, metadata=body, actor=caller.name)


@versions.get("", operation_id="versions-list", responses=problems(404, 422))
async def list_versions(model: ModelName, catalog: CatalogDep, _: ViewerDep) -> VersionList:
    return await catalog.list_versions(model=model)


@versions.get("/{version}", operation_id="versions-get", responses=problems(404, 422))
async def get_version(model: ModelName, version: VersionNumber, catalog: CatalogDep, _: ViewerDep) -> VersionPublic:
    return await catalog.get_version(model=model, version=version)


@versions.get(
    "/{version}/artifact", operation_id="versions-artifact", response_class=Response,
    responses={200: {"description": "The ONNX file", "content": {"application/octet-stream": {}}}, **problems(404, 422, 500)},
)
async def get_artifact(model: ModelName, version: VersionNumber, catalog: CatalogDep, _: ViewerDep) -> Response:
    public, data = await catalog.artifact(model=model, version=version)
    headers = {
        "ETag": f'"{public.sha256}"',
        "Content-Disposition": f'attachment; filename="{model}-v{version}.onnx"',
        "X-Mlfleet-Sha256": public.sha256,
    }
    return Response(data, media_type="application/octet-stream", headers=headers)


@traffic.get("", operation_id="traffic-get", responses=problems(404, 422))
async def get_traffic(model: ModelName, controller: TrafficDep, _: ViewerDep) -> TrafficPublic:
    return await controller.get(model=model)


@traffic.put("", operation_id="traffic-set", responses=problems(404, 409, 422, 502, 503))
async def set_traffic(model: ModelName, body: TrafficUpdate, controller: RolloutsDep, caller: DeployerDep,
                      allow_failed: AllowFailed = False) -> TrafficPublic:
    """Set the split by hand; refused (409) while a rollout owns the model's traffic, or when it newly names a version
    a rollout failed (unless `allow_failed`)."""
    return await controller.set_traffic(model=model, update=body, actor=caller.name, allow_failed=allow_failed)


@routes.get("", operation_id="routes-get")
async def get_routes(controller: TrafficDep) -> RoutingTable:
    """Every model's policy as gateways enforce it. Open to gateways without a key: every gateway
    publishes the same table at its own ``/v1/routes``."""
    return await controller.routing_table()


@audit.get("", operation_id="audit-list", responses=problems(422))
async def list_audit(
    catalog: CatalogDep,
    _: ViewerDep,
    model: Annotated[str | None, Query(pattern=MODEL_NAME_PATTERN, description="Only this model's events.")] = None,
    actor: Annotated[str | None, Query(max_length=200, description="Only this actor's events (a key's name, "
                                                                   "`controller`, `reconciler`).")] = None,
    action: Annotated[str | None, Query(max_length=100, pattern=r"^[a-z_]+(\.[a-z_]*)?$",
                                        description="Only this action (`traffic.set`), or a family of them "
                                                    "(`rollout.`).")] = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Only events older than this id: the "
                                                                           "previous page's `next_before_id`.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most events returned, newest first.")] = 100,
) -> AuditList:
    """Who did what, newest first, a page at a time: pass `next_before_id` as `before_id` for the next page."""
    return await catalog.audit(model=model, actor=actor, action=action, before_id=before_id, limit=limit)


@models.post("/{model}/rollback", operation_id="models-rollback", responses=problems(404, 409, 422, 502, 503))
async def rollback(model: ModelName, controller: RolloutsDep, caller: DeployerDep, body: Reason | None = None) -> TrafficPublic:
    """Instant rollback: an active rollout's canary is cleared, otherwise stable goes back to the previous stable."""
    return await controller.rollback(model=model, actor=caller.name, reason=body.reason if body else "")


@rollouts.post("", operation_id="rollouts-start", status_code=status.HTTP_201_CREATED,
               responses=problems(404, 409, 422, 502, 503))
async def start_rollout(model: ModelName, body: RolloutCreate, controller: RolloutsDep,
                        caller: DeployerDep, allow_failed: AllowFailed = False) -> RolloutPublic:
    """Start a progressive rollout of `candidate` against the current stable (409 if one is active, or if the
    candidate failed a rollout before, unless `allow_failed`)."""
    return await controller.start(model=model, body=body, actor=caller.name, allow_failed=allow_failed)


@rollouts.get("", operation_id="rollouts-list", responses=problems(404, 422))
async def list_rollouts(
    model: ModelName,
    controller: RolloutsDep,
    _: ViewerDep,
    state: Annotated[RolloutState | None, Query(description="Only rollouts in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most rollouts returned, newest first.")] = 100,
) -> RolloutList:
    return await controller.list(model=model, state=state, limit=limit)


@rollouts.get("/{rollout_id}", operation_id="rollouts-get", responses=problems(404, 422))
async def get_rollout(model: ModelName, rollout_id: RolloutId, controller: RolloutsDep, _: ViewerDep) -> RolloutPublic:
    return await controller.get(model=model, rollout_id=rollout_id)


def _rollout_action(name: str, summary: str):
    async def act(model: ModelName, rollout_id: RolloutId, controller: RolloutsDep, caller: DeployerDep,
                  body: Reason | None = None) -> RolloutPublic:
        return await getattr(controller, name)(model=model, rollout_id=rollout_id, actor=caller.name,
                                               reason=body.reason if body else "")

    rollouts.add_api_route(f"/{{rollout_id}}/{name}", act, methods=["POST"], operation_id=f"rollouts-{name}",
                           summary=summary, response_model=RolloutPublic, responses=problems(404, 409, 422, 502, 503))


_rollout_action("pause", "Pause: keep the split, stop judging")
_rollout_action("resume", "Resume a paused rollout with a fresh interval (a running one is left as it is)")
_rollout_action("approve", "Approve the final step of a `require_approval` rollout (promotes now if it waits)")
_rollout_action("promote", "Promote the candidate to stable now")
_rollout_action("abort", "Abort: back to the baseline, the candidate not marked failed")


@keys.post("", operation_id="keys-create", status_code=status.HTTP_201_CREATED, responses=problems(422))
async def create_key(body: KeyCreate, store: KeysDep, caller: AdminDep) -> KeyCreated:
    """A new API key; the `key` is shown in this answer only."""
    return await store.create(body, actor=caller.name)


@keys.get("", operation_id="keys-list", responses=problems())
async def list_keys(store: KeysDep, _: AdminDep) -> KeyList:
    return await store.list()


@keys.delete("/{key_id}", operation_id="keys-revoke", responses=problems(404, 422))
async def revoke_key(key_id: KeyId, store: KeysDep, caller: AdminDep) -> KeyPublic:
    """Revoke a key at once; other keys (e.g. its rotated successor) stay valid."""
    return await store.revoke(key_id, actor=caller.name)


@auth.get("/whoami", operation_id="auth-whoami", responses=problems(), response_model_exclude_none=True)
async def whoami(caller: KeyCheckDep) -> Identity:
    """The name, role and rate limit of the calling key; not counted against that limit (the gateway and the
    monitor check their callers' keys here)."""
    return caller


ROUTERS = (models, versions, traffic, rollouts, routes, audit, keys, auth)
