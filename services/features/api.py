"""Routes of the features service: listing, online lookup, push and materialization."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from services.common.errors import PROBLEM_JSON
from services.features import catalog as checks
from services.features.catalog import ViewSpec
from services.features.deps import CatalogDep, ResourcesDep, WriterDep
from services.features.materialization import materialize
from services.features.schemas import (
    FeatureViewList,
    FeatureViewPublic,
    FieldPublic,
    MaterializedViewPublic,
    MaterializeRequest,
    MaterializeResult,
    OnlineFeaturesMetadata,
    OnlineFeaturesRequest,
    OnlineFeaturesResponse,
    PushRequest,
    PushResult,
)


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        401: "No valid API key",
        403: "The key's role is below deployer",
        404: "Not found",
        409: "Conflict",
        422: "Invalid input",
        429: "The key's rate limit is exceeded",
        503: "Online store (or, for a key, the registry) unavailable",
    }
    return {s: {"description": descriptions[s], "content": {PROBLEM_JSON: {}}} for s in statuses}


features_router = APIRouter(prefix="/v1/features", tags=["features"])
push_router = APIRouter(prefix="/v1/push", tags=["push"])
materialize_router = APIRouter(prefix="/v1/materialize", tags=["materialize"])


@features_router.get(
    "", operation_id="features-list", response_model=FeatureViewList, responses=_problems(503)
)
async def list_feature_views(catalog: CatalogDep) -> FeatureViewList:
    views = [_view_public(v) for v in catalog.views]
    return FeatureViewList(data=views, count=len(views))


@features_router.post(
    "/online",
    operation_id="features-online",
    response_model=OnlineFeaturesResponse,
    responses=_problems(422, 503),
)
async def online_features(
    body: OnlineFeaturesRequest, catalog: CatalogDep, resources: ResourcesDep
) -> OnlineFeaturesResponse:
    refs = list(dict.fromkeys(body.features))
    views = checks.resolve_features(catalog, refs)
    rows = checks.check_entities(views, body.entities)
    found = await resources.store.online(refs, body.entities)
    resources.metrics.online_rows.inc(rows)
    metadata = OnlineFeaturesMetadata(feature_names=list(found), rows=rows)
    return OnlineFeaturesResponse(features=found, metadata=metadata)


@push_router.post(
    "/{push_source}",
    operation_id="push-rows",
    response_model=PushResult,
    responses=_problems(401, 403, 404, 422, 429, 503),
)
async def push_rows(
    push_source: str, body: PushRequest, catalog: CatalogDep, resources: ResourcesDep, _writer: WriterDep
) -> PushResult:
    """Write rows to the online store through a push source (a deployer key: every model scores on them)."""
    view = catalog.view_for_push(push_source)
    frame = checks.push_frame(view, body.rows, now=datetime.now(UTC))
    await resources.store.push(push_source, frame)
    resources.metrics.pushed_rows.labels(push_source).inc(len(frame))
    return PushResult(push_source=push_source, feature_views=[view.name], rows=len(frame))


@materialize_router.post(
    "",
    operation_id="materialize-run",
    response_model=MaterializeResult,
    responses=_problems(401, 403, 409, 422, 429, 503),
)
async def materialize_views(
    body: MaterializeRequest, catalog: CatalogDep, resources: ResourcesDep, _writer: WriterDep
) -> MaterializeResult:
    """Load the offline sources into the online store (a deployer key)."""
    done = await materialize(
        resources.store, catalog, start=body.start, end=body.end, now=datetime.now(UTC)
    )
    for view in done:
        resources.metrics.materialized_rows.labels(view.name).inc(view.rows)
    data = [
        MaterializedViewPublic(
            name=v.name, start=v.start, end=v.end, rows=v.rows, entities=v.entities
        )
        for v in done
    ]
    return MaterializeResult(incremental=body.start is None, data=data, count=len(data))


def _view_public(view: ViewSpec) -> FeatureViewPublic:
    return FeatureViewPublic(
        name=view.name,
        entities=list(view.entities),
        join_keys=[FieldPublic(name=f.name, dtype=f.dtype) for f in view.join_keys],
        fields=[FieldPublic(name=f.name, dtype=f.dtype) for f in view.fields],
        ttl_seconds=view.ttl.total_seconds() if view.ttl else None,
        push_source=view.push_source,
        offline_path=view.offline_path,
    )
