"""The gateway app: ``uvicorn --factory services.gateway.app:create_app --http
services.gateway.http_protocol:CoalescingHttpToolsProtocol`` (it also runs without ``--http``, only slower)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from services.common.errors import install_error_handlers
from services.common.health import health_router
from services.common.heap import freeze_startup_heap
from services.common.http_security import install_http_security
from services.common.logs import configure_logging
from services.common.metrics import instrument
from services.common.telemetry import Tracing
from services.gateway import api
from services.gateway.hot_path import FRONT_DOOR_STATE, PredictFrontDoor
from services.gateway.metrics import GatewayMetrics
from services.gateway.resources import Gateway
from services.gateway.settings import GatewaySettings

DESCRIPTION = "Predictions with online features and canary routing, and a KServe v2 pass-through to Triton."


class GatewayApp(FastAPI):
    """FastAPI, except that its front door answers the predict route before the middleware stack sees it."""

    front_door: PredictFrontDoor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self.front_door.serve(scope, receive, send):
            await super().__call__(scope, receive, send)


def create_app(settings: GatewaySettings | None = None) -> GatewayApp:
    settings = settings or GatewaySettings()
    configure_logging(settings.log_level, service="gateway")
    registry = CollectorRegistry()
    metrics = GatewayMetrics.create(registry)
    tracing = Tracing.from_env("gateway")

    @asynccontextmanager
    async def lifespan(app: GatewayApp) -> AsyncIterator[dict[str, PredictFrontDoor]]:
        tracing.start()
        app.state.gateway = app.front_door.gateway = await Gateway.open(settings, metrics, tracing.active_tracer)
        tracing.instrument_redis(app.state.gateway.redis)
        freeze_startup_heap()
        try:
            yield {FRONT_DOOR_STATE: app.front_door}  # the lifespan state uvicorn hands its HTTP protocol
        finally:
            await app.state.gateway.close()
            tracing.shutdown()

    async def readiness(request: Request) -> dict[str, bool]:
        return await request.app.state.gateway.readiness()

    app = GatewayApp(title="mlfleet gateway", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    install_error_handlers(app)
    install_http_security(app, cors_origins=settings.cors_origins)
    instrument(app, registry)
    tracing.instrument_app(app)
    app.include_router(health_router(readiness))
    app.router.routes.append(api.predict_route())
    app.include_router(api.routes_router)
    app.include_router(api.v2_router)
    app.openapi = lambda: _openapi(app)
    app.front_door = PredictFrontDoor(traced=lambda: tracing.enabled)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema plus the predict route, which is served by plain Starlette."""
    if app.openapi_schema is None:
        app.openapi_schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                         routes=[*app.routes, api.predict_docs()])
    return app.openapi_schema
