"""HTTP routes: parse, call the domain, shape the answer.

The predict route is the hot path, so it is a plain Starlette route (DESIGN.md measured
FastAPI's routing/response layer at 60–100 µs per request); :func:`predict_docs` gives
it the same OpenAPI description a FastAPI route would have.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.common.errors import PROBLEM_JSON, MlfleetError, PayloadTooLarge
from services.gateway.deps import GatewayDep
from services.gateway.hot_path import answer_prediction, check_body_size, request_ids
from services.gateway.kserve_request import REPLACED_HEADERS, checked_infer_request
from services.gateway.passthrough import Forwarded
from services.gateway.predictions import RequestContext
from services.gateway.resources import Gateway
from services.gateway.schemas import PredictRequest, PredictResponse, RoutesPublic

PREDICT_PATH = "/v1/models/{model}/predict"


def _problems(*statuses: int) -> dict[int | str, dict]:
    return {status: {"description": "Problem details (RFC 9457)", "content": {PROBLEM_JSON: {}}} for status in statuses}


# --- /v1 predictions ----------------------------------------------------------------------------

async def predict(request: Request) -> Response:
    """``POST /v1/models/{model}/predict`` when the request goes through the app's middleware (tracing on, or a
    cross-origin call); otherwise :class:`~services.gateway.hot_path.PredictFrontDoor` answers it. See
    :func:`predict_docs` for the contract."""
    gateway: Gateway = request.app.state.gateway
    try:
        body = await read_body(request, gateway.settings.max_body_bytes)
        with gateway.busy_poll:
            answer, ctx = await answer_prediction(gateway, request.path_params["model"], request.headers, body)
    except MlfleetError as exc:
        gateway.metrics.predict_responses.labels(str(exc.status)).inc()
        raise
    gateway.metrics.predict_responses.labels("200").inc()
    return Response(answer, media_type="application/json",
                    headers={"X-Request-Id": ctx.request_id, "X-Trace-Id": ctx.trace_id})


def predict_route() -> Route:
    return Route(PREDICT_PATH, predict, methods=["POST"], name="predictions-predict")


def predict_docs() -> APIRoute:
    """The OpenAPI description of :func:`predict`; added to the schema, never mounted."""

    async def predict_documented(
        model: str,
        body: PredictRequest,
        x_mlfleet_version: Annotated[int | None, Header(
            description="Pin a version the model's policy names; needs `Authorization: Bearer <key>` of a "
                        "deployer (401/403 otherwise).")] = None,
        authorization: Annotated[str | None, Header(description="`Bearer <key>`; only read with X-Mlfleet-Version.")] = None,
        x_request_id: Annotated[str | None, Header(description="Caller's request id; one is generated otherwise.")] = None,
    ) -> PredictResponse:
        """Score instances: enrich them with online features, route stable/canary by the routing key, infer on Triton."""
        raise NotImplementedError("served by services.gateway.api.predict")

    return APIRoute(PREDICT_PATH, predict_documented, methods=["POST"], response_model=PredictResponse,
                    operation_id="predictions-predict", tags=["predictions"], summary="Predict",
                    responses=_problems(400, 401, 403, 404, 413, 415, 422, 502, 503, 504))


# --- /v1/routes ---------------------------------------------------------------------------------

routes_router = APIRouter(prefix="/v1/routes", tags=["routes"])


@routes_router.get("", operation_id="routes-get", response_model=RoutesPublic, responses=_problems(503))
async def get_routes(gateway: GatewayDep) -> RoutesPublic:
    """The routing table this gateway serves from, with its revision."""
    book = gateway.predictor.book()
    return RoutesPublic(revision=book.revision, loaded_at=gateway.policy.loaded_at, table=book.table)


# --- /v2 KServe pass-through --------------------------------------------------------------------

v2_router = APIRouter(prefix="/v2", tags=["kserve-v2"], responses=_problems(404, 503))


@contextlib.contextmanager
def kserve_errors() -> Iterator[None]:
    """Problems also carry KServe's ``error`` member, which ``tritonclient`` reads."""
    try:
        yield
    except MlfleetError as exc:
        exc.extra.setdefault("error", exc.detail)
        raise


def _answer(forwarded: Forwarded) -> Response:
    return Response(forwarded.body, status_code=forwarded.status, headers=forwarded.headers)


@v2_router.get("", operation_id="kserve-v2-server-metadata")
async def server_metadata(gateway: GatewayDep) -> Response:
    with kserve_errors():
        return _answer(await gateway.passthrough.server("/v2"))


@v2_router.get("/health/live", operation_id="kserve-v2-server-live")
async def server_live(gateway: GatewayDep) -> Response:
    with kserve_errors():
        return _answer(await gateway.passthrough.server("/v2/health/live"))


@v2_router.get("/health/ready", operation_id="kserve-v2-server-ready")
async def server_ready(gateway: GatewayDep) -> Response:
    with kserve_errors():
        return _answer(await gateway.passthrough.server("/v2/health/ready"))


@v2_router.get("/models/{model}", operation_id="kserve-v2-model-metadata")
@v2_router.get("/models/{model}/versions/{version}", operation_id="kserve-v2-model-version-metadata")
async def model_metadata(gateway: GatewayDep, model: str, version: str | None = None) -> Response:
    with kserve_errors():
        return _answer(await gateway.passthrough.model(gateway.predictor.book(), model, version))


@v2_router.get("/models/{model}/ready", operation_id="kserve-v2-model-ready")
@v2_router.get("/models/{model}/versions/{version}/ready", operation_id="kserve-v2-model-version-ready")
async def model_ready(gateway: GatewayDep, model: str, version: str | None = None) -> Response:
    with kserve_errors():
        return _answer(await gateway.passthrough.model(gateway.predictor.book(), model, version, "/ready"))


@v2_router.get("/models/{model}/config", operation_id="kserve-v2-model-config")
@v2_router.get("/models/{model}/versions/{version}/config", operation_id="kserve-v2-model-version-config")
async def model_config(gateway: GatewayDep, model: str, version: str | None = None) -> Response:
    with kserve_errors():
        return _answer(await gateway.passthrough.model(gateway.predictor.book(), model, version, "/config"))


@v2_router.post("/models/{model}/infer", operation_id="kserve-v2-model-infer",
                responses=_problems(400, 413, 415, 422))
@v2_router.post("/models/{model}/versions/{version}/infer", operation_id="kserve-v2-model-version-infer",
                responses=_problems(400, 401, 403, 413, 415, 422))
async def model_infer(
    request: Request,
    gateway: GatewayDep,
    model: str,
    version: str | None = None,
    x_mlfleet_routing_key: Annotated[str | None, Header(description="Key that pins the caller to one variant.")] = None,
    authorization: Annotated[str | None, Header(
        description="`Bearer <key>` of a deployer; required by the versioned route only (it pins a version).")] = None,
) -> Response:
    """KServe v2 inference (JSON or binary tensors); unversioned calls are routed stable/canary. Naming a version
    pins it, which needs the same deployer key as `X-Mlfleet-Version` (401/403 otherwise)."""
    with kserve_errors():
        if version is not None:
            await gateway.pinning.authorize(authorization)
        body = await read_body(request, gateway.settings.max_body_bytes)
        checked = checked_infer_request(body, request.headers, max_bytes=gateway.settings.max_body_bytes)
        headers = {name: value for name, value in request.headers.items() if name not in REPLACED_HEADERS}
        ctx = RequestContext.begin(*request_ids(request.headers))
        forwarded = await gateway.passthrough.infer(gateway.predictor.book(), model, version, checked.body,
                                                    headers | checked.headers, x_mlfleet_routing_key, ctx)
        return _answer(forwarded)


# --- transport helpers --------------------------------------------------------------------------

async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 before parsing when its declared or streamed size exceeds ``limit``."""
    check_body_size(request.headers, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)
