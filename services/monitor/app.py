"""The monitor service: consumes prediction events; serves live metrics, drift, feedback, alerts, a dashboard."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from services.common.errors import BackendUnavailable, install_error_handlers, problem_response
from services.common.health import health_router
from services.common.deferred_imports import import_in_background
from services.common.heap import freeze_startup_heap
from services.common.http_security import install_http_security
from services.common.logs import configure_logging
from services.common.metrics import instrument
from services.common.rate_limit import KeyRateLimiter
from services.common.redis import connect
from services.common.remote_auth import RemoteAuthorizer
from services.common.telemetry import Tracing
from services.monitor import api
from services.monitor.alerts import AlertCenter
from services.monitor.consumer import ConsumerConfig, EventConsumer
from services.monitor.deps import FEEDBACK_ROLE
from services.monitor.feedback import FeedbackStore
from services.monitor.registry_client import RegistryClient
from services.monitor.reports import DriftReporter
from services.monitor.samples import SampleStore
from services.monitor.settings import MonitorSettings
from services.monitor.sinks import OncePerModel, PipelineRef, RetryPolicy, SinkDispatcher, build_sinks
from services.monitor.store import AggregateStore
from services.monitor.telemetry import MonitorMetrics
from services.monitor.watcher import Watcher



@dataclass
class MonitorResources:
    """Everything the lifespan opens, closed in reverse on shutdown."""

    redis: aioredis.Redis
    store: AggregateStore
    consumer: EventConsumer
    consumer_task: asyncio.Task
    samples: SampleStore
    feedback: FeedbackStore
    registry: RegistryClient
    reporter: DriftReporter
    alerts: AlertCenter
    dispatcher: SinkDispatcher
    sink_http: httpx.AsyncClient
    watcher: Watcher
    feedback_auth: RemoteAuthorizer
    """Checks that a feedback caller's key is a deployer's (DESIGN.md roles)."""
    background: list[asyncio.Task] = field(default_factory=list)
    """The drift and alert-rule loops."""


def _consumer_config(settings: MonitorSettings) -> ConsumerConfig:
    return ConsumerConfig(
        stream=settings.stream, group=settings.group, consumer=settings.consumer_name,
        batch_size=settings.batch_size, block_ms=settings.block_ms,
        reclaim_idle_ms=settings.reclaim_idle_ms, retry_max_s=settings.retry_max_s,
        linger_s=settings.batch_linger_ms / 1000, commit_timeout_s=settings.commit_timeout_s,
    )


async def _readiness(request: Request) -> dict[str, bool]:
    resources: MonitorResources = request.app.state.resources
    try:
        await resources.redis.ping()
        return {"redis": True, "consumer_group": await resources.consumer.group_exists()}
    except (RedisError, OSError):
        return {"redis": False, "consumer_group": False}


def _watching_resources(settings: MonitorSettings, metrics: MonitorMetrics, redis: aioredis.Redis,
                        store: AggregateStore, consumer: EventConsumer, consumer_task: asyncio.Task,
                        samples: SampleStore) -> MonitorResources:
    """Feedback, drift reports, alerts and their sinks, and the watcher that drives them."""
    feedback = FeedbackStore(redis, prediction_ttl_s=settings.prediction_ttl_s, seen_ttl_s=settings.seen_ttl_s,
                             bucket_ttl_s=settings.bucket_ttl_s)
    registry = RegistryClient(settings.registry_url, api_key=settings.registry_key(),
                              timeout_s=settings.registry_timeout_s, profile_cache_s=settings.profile_cache_s)
    reporter = DriftReporter(redis, samples, registry, history_max=settings.drift_history_max,
                             ttl_s=settings.bucket_ttl_s)
    sink_http = httpx.AsyncClient(timeout=settings.sink_timeout_s)
    sinks = build_sinks(
        webhook_urls=settings.alert_webhook_urls, retrain_url=settings.retrain_webhook_url,
        pipeline=PipelineRef(settings.retrain_pipeline_id, settings.retrain_pipeline_version_id,
                             settings.retrain_experiment_id),
        monitor_url=settings.monitor_url(), retrain_gate=OncePerModel(redis, settings.retrain_min_interval_s),
    )
    dispatcher = SinkDispatcher(
        sinks, http=sink_http, queue_size=settings.sink_queue_size,
        retry=RetryPolicy(settings.sink_max_attempts, settings.sink_retry_initial_s, settings.sink_retry_max_s),
        on_outcome=lambda sink, outcome: metrics.deliveries.labels(sink=sink, outcome=outcome).inc(),
    )
    alerts = AlertCenter(
        redis, cooldown_s=settings.alert_cooldown_s, history_max=settings.alert_history_max,
        resolve_after_s=settings.alert_resolve_after_s,
        dispatch=dispatcher.submit,
        on_fired=lambda alert, fired: metrics.alerts.labels(
            rule=alert.rule, severity=alert.severity, outcome="fired" if fired else "suppressed").inc(),
        on_resolved=lambda alert: metrics.alerts.labels(rule=alert.rule, severity=alert.severity,
                                                        outcome="resolved").inc(),
    )
    watcher = Watcher(settings, store, reporter, feedback, alerts, metrics)
    feedback_auth = RemoteAuthorizer(registry_url=settings.registry_url, role=FEEDBACK_ROLE,
                                     timeout_s=settings.registry_timeout_s, ttl_s=settings.auth_ttl_s,
                                     limiter=KeyRateLimiter(on_limited=metrics.rate_limited.inc))
    return MonitorResources(redis, store, consumer, consumer_task, samples, feedback, registry, reporter, alerts,
                            dispatcher, sink_http, watcher, feedback_auth)


def create_app(settings: MonitorSettings | None = None) -> FastAPI:
    settings = settings or MonitorSettings()
    configure_logging(settings.log_level, service="monitor")
    registry = CollectorRegistry()
    metrics = MonitorMetrics.create(registry)
    tracing = Tracing.from_env("monitor")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The socket timeout must outlast a blocking XREADGROUP. No client-side retries: a
        # transaction re-sent after its reply was lost would count a batch twice; the consumer
        # loop retries on its own, from the entries still pending.
        tracing.start()
        redis = connect(settings.redis_url, timeout_s=2.0 + settings.block_ms / 1000, retries=False)
        tracing.instrument_redis(redis)
        commit_redis = connect(settings.redis_url, reply_timeout=False, retries=False)
        store = AggregateStore(redis, ttl_s=settings.bucket_ttl_s)
        samples = SampleStore(redis, samples_max=settings.samples_max, prediction_ttl_s=settings.prediction_ttl_s,
                              seen_ttl_s=settings.seen_ttl_s, samples_per_s=settings.sample_rate_per_s(),
                              samples_ttl_s=settings.bucket_ttl_s)
        consumer = EventConsumer(redis, store, _consumer_config(settings), metrics, tracing.active_tracer,
                                 samples=samples, commit_redis=commit_redis)
        task = asyncio.create_task(consumer.run(), name="monitor-consumer")
        resources = _watching_resources(settings, metrics, redis, store, consumer, task, samples)
        app.state.resources = resources
        resources.dispatcher.start()
        resources.background = [asyncio.create_task(resources.watcher.run_drift(), name="monitor-drift"),
                                 asyncio.create_task(resources.watcher.run_rules(), name="monitor-rules")]
        freeze_startup_heap()
        import_in_background("scipy.stats", "scipy.spatial.distance", freeze=True)
        try:
            yield
        finally:
            for background in [task, *resources.background]:
                background.cancel()
            for background in [task, *resources.background]:
                with contextlib.suppress(asyncio.CancelledError):
                    await background
            await resources.dispatcher.stop()
            await resources.sink_http.aclose()
            await resources.registry.aclose()
            await resources.feedback_auth.close()
            await redis.aclose()
            await commit_redis.aclose()
            tracing.shutdown()

    app = FastAPI(title="mlfleet monitor", version="0.1.0", lifespan=lifespan,
                  description="Live per-version metrics of the fleet's predictions.")
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    install_http_security(app, cors_origins=settings.cors_origins, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(RedisError)
    async def _redis_unavailable(request: Request, exc: RedisError) -> JSONResponse:
        return problem_response(BackendUnavailable("Redis is not reachable; try again shortly."), request)

    instrument(app, registry)
    tracing.instrument_app(app)
    app.include_router(health_router(_readiness))
    app.include_router(api.models)
    app.include_router(api.stats)
    app.include_router(api.feedback)
    app.include_router(api.alerts)
    app.include_router(api.dashboard)
    app.mount("/static", StaticFiles(directory=api.STATIC_DIR), name="static")
    return app
