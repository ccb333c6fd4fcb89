"""HTTP routes of the registry: parse, call the domain, shape the answer."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, UploadFile, status
from fastapi.responses import Response

from services.common.errors import PROBLEM_JSON, PayloadTooLarge
from services.common.schemas import MODEL_NAME_PATTERN, RoutingTable
from services.registry.catalog import parse_version_metadata
from services.registry.deps import ActorDep, CatalogDep, TrafficDep
from services.registry.schemas import (
    AuditList,
    ModelCreate,
    ModelList,
    ModelPublic,
    Problem,
    TrafficPublic,
    TrafficUpdate,
    VersionList,
    VersionPublic,
)

ModelName = Annotated[str, Path(pattern=MODEL_NAME_PATTERN, description="Registered model name.")]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1, description="Version number within the model.")]


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem+json errors a route can answer."""
    schema = Problem.model_json_schema()
    return {s: {"description": HTTPStatus(s).phrase, "content": {PROBLEM_JSON: {"schema": schema}}} for s in statuses}


models = APIRouter(prefix="/v1/models", tags=["models"])
versions = APIRouter(prefix="/v1/models/{model}/versions", tags=["versions"])
traffic = APIRouter(prefix="/v1/models/{model}/traffic", tags=["traffic"])
routes = APIRouter(prefix="/v1/routes", tags=["routes"])
audit = APIRouter(prefix="/v1/audit", tags=["audit"])


@models.post("", operation_id="models-create", status_code=status.HTTP_201_CREATED, responses=problems(409, 422))
async def create_model(body: ModelCreate, catalog: CatalogDep, actor: ActorDep) -> ModelPublic:
    return await catalog.create_model(body, actor=actor)


@models.get("", operation_id="models-list")
async def list_models(catalog: CatalogDep) -> ModelList:
    return await catalog.list_models()


@models.get("/{model}", operation_id="models-get", responses=problems(404, 422))
async def get_model(model: ModelName, catalog: CatalogDep) -> ModelPublic:
    return await catalog.get_model(name=model)


@versions.post("", operation_id="versions-register", status_code=status.HTTP_201_CREATED,
               responses=problems(404, 413, 422))
async def register_version(
    model: ModelName,
    artifact: Annotated[UploadFile, File(description="The ONNX model file.")],
    metadata: Annotated[str, Form(description="A JSON `VersionCreate` document: signature, metrics, lineage, …")],
    catalog: CatalogDep,
    actor: ActorDep,
) -> VersionPublic:
    if artifact.size is not None and artifact.size > catalog.max_artifact_bytes:
        raise PayloadTooLarge(f"the artifact exceeds {catalog.max_artifact_bytes} bytes")
    body = parse_version_metadata(metadata)
    data = await artifact.read(catalog.max_artifact_bytes + 1)
    return await catalog.register_version(model=model, artifact=data, metadata=body, actor=actor)


@versions.get("", operation_id="versions-list", responses=problems(404, 422))
async def list_versions(model: ModelName, catalog: CatalogDep) -> VersionList:
    return await catalog.list_versions(model=model)


@versions.get("/{version}", operation_id="versions-get", responses=problems(404, 422))
async def get_version(model: ModelName, version: VersionNumber, catalog: CatalogDep) -> VersionPublic:
    return await catalog.get_version(model=model, version=version)


@versions.get(
    "/{version}/artifact", operation_id="versions-artifact", response_class=Response,
    responses={200: {"description": "The ONNX file", "content": {"application/octet-stream": {}}}, **problems(404, 422, 500)},
)
async def get_artifact(model: ModelName, version: VersionNumber, catalog: CatalogDep) -> Response:
    public, data = await catalog.artifact(model=model, version=version)
    headers = {
        "ETag": f'"{public.sha256}"',
        "Content-Disposition": f'attachment; filename="{model}-v{version}.onnx"',
        "X-Mlfleet-Sha256": public.sha256,
    }
    return Response(data, media_type="application/octet-stream", headers=headers)


@traffic.get("", operation_id="traffic-get", responses=problems(404, 422))
async def get_traffic(model: ModelName, controller: TrafficDep) -> TrafficPublic:
    return await controller.get(model=model)


@traffic.put("", operation_id="traffic-set", responses=problems(404, 422, 502, 503))
async def set_traffic(model: ModelName, body: TrafficUpdate, controller: TrafficDep, actor: ActorDep) -> TrafficPublic:
    return await controller.set(model=model, update=body, actor=actor)


@routes.get("", operation_id="routes-get")
async def get_routes(controller: TrafficDep) -> RoutingTable:
    return await controller.routing_table()


@audit.get("", operation_id="audit-list", responses=problems(422))
async def list_audit(
    catalog: CatalogDep,
    model: Annotated[str | None, Query(pattern=MODEL_NAME_PATTERN, description="Only this model's events.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most events returned, newest first.")] = 100,
) -> AuditList:
    return await catalog.audit(model=model, limit=limit)


ROUTERS = (models, versions, traffic, routes, audit)
