"""The features service: owns the Feast definitions, materialization and push (port 8082)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from services.common.errors import install_error_handlers
from services.common.feature_store import open_feature_store
from services.common.health import health_router
from services.common.http_security import install_http_security
from services.common.logs import configure_logging
from services.common.metrics import instrument
from services.common.redis import connect
from services.common.remote_auth import RemoteAuthorizer
from services.common.telemetry import Tracing
from services.features.api import features_router, materialize_router, push_router
from services.features.definitions import feature_repo
from services.features.deps import WRITER_ROLE, FeaturesResources
from services.features.metrics import FeatureMetrics
from services.features.settings import FeaturesSettings
from services.features.store import FeastStore


def create_app(settings: FeaturesSettings | None = None) -> FastAPI:
    settings = settings or FeaturesSettings()
    registry = CollectorRegistry()
    tracing = Tracing.from_env("features")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, service="features")
        tracing.start()
        feast = open_feature_store(redis_url=settings.redis_url, feast_dir=settings.feast_dir,
                                   registry_url=settings.feast_registry_url)
        store = FeastStore(feast, feature_repo(settings.data_dir))
        redis = connect(settings.redis_url)
        tracing.instrument_redis(redis)
        writers = RemoteAuthorizer(registry_url=settings.registry_url, role=WRITER_ROLE,
                                   timeout_s=settings.registry_timeout_s, ttl_s=settings.auth_ttl_s)
        resources = FeaturesResources(
            settings=settings, store=store, redis=redis, metrics=FeatureMetrics(registry), writers=writers
        )
        app.state.resources = resources
        try:
            resources.catalog = await store.apply()
            yield
        finally:
            await store.close()
            await writers.close()
            await redis.aclose()
            tracing.shutdown()

    app = FastAPI(
        title="mlfleet features",
        version="0.1.0",
        lifespan=lifespan,
        description="Feast feature store of the fleet: online lookup, push, materialization.",
    )
    install_error_handlers(app)
    install_http_security(app, cors_origins=settings.cors_origins, max_body_bytes=settings.max_body_bytes)
    instrument(app, registry)
    tracing.instrument_app(app)
    app.include_router(health_router(_readiness))
    app.include_router(features_router)
    app.include_router(push_router)
    app.include_router(materialize_router)
    return app


async def _readiness(request: Request) -> dict[str, bool]:
    resources: FeaturesResources = request.app.state.resources
    try:
        redis_ok = bool(await resources.redis.ping())
    except (RedisError, OSError):
        redis_ok = False
    return {"redis": redis_ok, "definitions": resources.catalog is not None}
