"""The registry service: models, versions, traffic policy, routing table and audit log.

Run with ``uvicorn --factory services.registry.app:create_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry

from services.common.errors import install_error_handlers
from services.common.health import health_router
from services.common.logs import configure_logging
from services.common.metrics import instrument
from services.registry.api import ROUTERS
from services.registry.container import Registry
from services.registry.settings import RegistrySettings
from services.registry.telemetry import RegistryMetrics


async def readiness(request: Request) -> dict[str, bool]:
    registry: Registry | None = getattr(request.app.state, "registry", None)
    if registry is None:
        return {"database": False, "triton": False}
    return {"database": await registry.database.ping(), "triton": await registry.triton.live()}


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    configure_logging(settings.log_level, service="registry")
    metrics_registry = CollectorRegistry()
    metrics = RegistryMetrics.create(metrics_registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = await Registry.open(settings, metrics)
        app.state.registry = registry
        in_step = asyncio.create_task(registry.traffic.keep_triton_in_step(settings.reconcile_interval_s))
        try:
            yield
        finally:
            in_step.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await in_step
            await registry.close()

    app = FastAPI(
        title="mlfleet registry",
        description="Model versions, validation gates, traffic policy (stable/canary/shadow), routing table and audit log.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    instrument(app, metrics_registry)
    app.include_router(health_router(readiness))
    for router in ROUTERS:
        app.include_router(router)
    return app
