"""The registry service: models, versions, traffic policy, rollouts, API keys, routing table and audit log.

Run with ``uvicorn --factory services.registry.app:create_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry

from services.common.deferred_imports import import_in_background
from services.common.errors import install_error_handlers
from services.common.health import health_router
from services.common.http_security import install_http_security
from services.common.logs import configure_logging
from services.common.metrics import instrument
from services.common.rate_limit import KeyRateLimiter
from services.common.telemetry import Tracing
from services.registry.api import MAX_METADATA_BYTES, ROUTERS
from services.registry.container import Registry
from services.registry.settings import RegistrySettings
from services.registry.telemetry import RegistryMetrics


TRITON_CHECK_S = 1.0
"""How long readiness waits for Triton: a Triton that hangs rather than refusing must not hold the probe past its
timeout (3 s in the chart), which would take the registry out of its Service after all."""
OPTIONAL_CHECKS = frozenset({"triton"})
"""Triton down does not take the registry out of its Service: during that incident the routing table the gateways
refresh from, the keys the gateway and the monitor check callers against, reads and the audit log still work, and a
change that needs Triton answers 503 ``backend-unavailable`` itself."""


async def readiness(request: Request) -> dict[str, bool]:
    """The database gates readiness; Triton is reported only (:data:`OPTIONAL_CHECKS`)."""
    registry: Registry | None = getattr(request.app.state, "registry", None)
    if registry is None:
        return {"database": False, "triton": False}
    database, triton = await asyncio.gather(registry.database.ping(), registry.triton.live(timeout_s=TRITON_CHECK_S))
    return {"database": database, "triton": triton}


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    configure_logging(settings.log_level, service="registry")
    metrics_registry = CollectorRegistry()
    metrics = RegistryMetrics.create(metrics_registry)
    tracing = Tracing.from_env("registry")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracing.start()
        registry = await Registry.open(settings, metrics)
        app.state.registry = registry
        tracing.instrument_redis(registry.redis)
        tasks = [
            asyncio.create_task(registry.traffic.keep_triton_in_step(settings.reconcile_interval_s)),
            asyncio.create_task(registry.rollouts.run(), name="registry-rollout-controller"),
        ]
        import_in_background("scipy.stats")
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await registry.close()
            tracing.shutdown()

    app = FastAPI(
        title="mlfleet registry",
        description="Model versions, validation gates, traffic policy (stable/canary/shadow), progressive rollouts "
                    "with instant rollback, API keys, routing table and audit log. Every route but the routing table "
                    "and health checks needs `Authorization: Bearer <key>`.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_http_security(app, cors_origins=settings.cors_origins,
                          max_body_bytes=settings.max_artifact_bytes + MAX_METADATA_BYTES + settings.max_body_bytes)
    app.state.rate_limiter = KeyRateLimiter(on_limited=metrics.rate_limited.inc)
    instrument(app, metrics_registry)
    tracing.instrument_app(app)
    app.include_router(health_router(readiness, optional=OPTIONAL_CHECKS))
    for router in ROUTERS:
        app.include_router(router)
    return app
