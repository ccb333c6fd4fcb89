"""The monitor service: consumes prediction events, serves live per-version metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from services.common.errors import BackendUnavailable, install_error_handlers, problem_response
from services.common.health import health_router
from services.common.logs import configure_logging
from services.common.metrics import instrument
from services.common.redis import connect
from services.monitor import api
from services.monitor.consumer import ConsumerConfig, EventConsumer
from services.monitor.settings import MonitorSettings
from services.monitor.store import AggregateStore
from services.monitor.telemetry import MonitorMetrics


@dataclass
class MonitorResources:
    """Everything the lifespan opens, closed in reverse on shutdown."""

    redis: aioredis.Redis
    store: AggregateStore
    consumer: EventConsumer
    consumer_task: asyncio.Task


def _consumer_config(settings: MonitorSettings) -> ConsumerConfig:
    return ConsumerConfig(
        stream=settings.stream, group=settings.group, consumer=settings.consumer_name,
        batch_size=settings.batch_size, block_ms=settings.block_ms,
        reclaim_idle_ms=settings.reclaim_idle_ms, retry_max_s=settings.retry_max_s,
    )


async def _readiness(request: Request) -> dict[str, bool]:
    resources: MonitorResources = request.app.state.resources
    try:
        await resources.redis.ping()
        return {"redis": True, "consumer_group": await resources.consumer.group_exists()}
    except (RedisError, OSError):
        return {"redis": False, "consumer_group": False}


def create_app(settings: MonitorSettings | None = None) -> FastAPI:
    settings = settings or MonitorSettings()
    configure_logging(settings.log_level, service="monitor")
    registry = CollectorRegistry()
    metrics = MonitorMetrics.create(registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The socket timeout must outlast a blocking XREADGROUP. No client-side retries: a
        # transaction re-sent after its reply was lost would count a batch twice; the consumer
        # loop retries on its own, from the entries still pending.
        redis = connect(settings.redis_url, timeout_s=2.0 + settings.block_ms / 1000)
        redis.set_retry(Retry(NoBackoff(), 0))
        store = AggregateStore(redis, ttl_s=settings.bucket_ttl_s)
        consumer = EventConsumer(redis, store, _consumer_config(settings), metrics)
        task = asyncio.create_task(consumer.run(), name="monitor-consumer")
        app.state.resources = MonitorResources(redis, store, consumer, task)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await redis.aclose()

    app = FastAPI(title="mlfleet monitor", version="0.1.0", lifespan=lifespan,
                  description="Live per-version metrics of the fleet's predictions.")
    app.state.settings = settings
    install_error_handlers(app)

    @app.exception_handler(RedisError)
    async def _redis_unavailable(request: Request, exc: RedisError) -> JSONResponse:
        return problem_response(BackendUnavailable("Redis is not reachable; try again shortly."), request)

    instrument(app, registry)
    app.include_router(health_router(_readiness))
    app.include_router(api.models)
    app.include_router(api.stats)
    return app
