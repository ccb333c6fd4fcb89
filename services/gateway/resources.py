"""Everything the gateway holds open while it runs, in one typed container on ``app.state``."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import redis.asyncio as aioredis
from opentelemetry.trace import Tracer

from services.common.auth import Role
from services.common.feature_store import open_feature_store
from services.common.pipelined_redis import PipelinedRedis
from services.common.rate_limit import KeyRateLimiter
from services.common.redis import connect
from services.common.remote_auth import RemoteAuthorizer
from services.gateway.busy_poll import BusyPoll
from services.gateway.events import EventWriter
from services.gateway.features import FeatureReader
from services.gateway.metrics import GatewayMetrics
from services.gateway.passthrough import TritonPassthrough
from services.gateway.policy import PolicySync
from services.gateway.predictions import Predictor
from services.gateway.settings import GatewaySettings
from services.gateway.triton import TritonInference

PING_TIMEOUT_S = 1.0
EVENT_WRITE_TIMEOUT_S = 2.0
"""Deadline of one write of prediction events (and of opening the writer's connection); a write that misses it
replaces the connection (it has then waited longer than the connection's ``stale_after_s``, half of it)."""
PINNING_ROLE = Role.deployer
"""Who may choose the version that answers: ``X-Mlfleet-Version`` on ``/v1`` predictions and the versioned
KServe route ``/v2/models/{model}/versions/{version}/infer``. Unpinned requests are never checked."""


@dataclass
class Gateway:
    settings: GatewaySettings
    metrics: GatewayMetrics
    redis: aioredis.Redis
    policy: PolicySync
    triton: TritonInference
    features: FeatureReader
    events: EventWriter
    predictor: Predictor
    passthrough: TritonPassthrough
    pinning: RemoteAuthorizer
    busy_poll: BusyPoll

    @classmethod
    async def open(cls, settings: GatewaySettings, metrics: GatewayMetrics, tracer: Tracer | None = None) -> Gateway:
        """Create every client and start the background tasks (event writer, policy sync).
        ``tracer`` is ``None`` when tracing is off."""
        redis = connect(settings.redis_url)
        store = await asyncio.to_thread(open_feature_store, redis_url=settings.redis_url, feast_dir=settings.feast_dir,
                                        registry_url=settings.feast_registry_url, registry_cache_ttl_s=0,
                                        registry_cache_mode="thread")
        features = FeatureReader(store, settings.redis_url, timeout_s=settings.feature_timeout_s,
                                 latency=metrics.feature_latency, registry_refresh_s=settings.feast_registry_refresh_s)
        await features.warm_up()
        triton = TritonInference(settings.triton_http_url, timeout_s=settings.inference_timeout_s,
                                 max_batch_rows=settings.batch_max_rows)
        events = EventWriter(PipelinedRedis(settings.redis_url, connect_timeout_s=EVENT_WRITE_TIMEOUT_S,
                                            stale_after_s=EVENT_WRITE_TIMEOUT_S / 2),
                             metrics, queue_size=settings.event_queue_size, batch_size=settings.event_batch_size,
                             maxlen=settings.events_maxlen, linger_s=settings.event_linger_ms / 1000,
                             write_timeout_s=EVENT_WRITE_TIMEOUT_S)
        policy = PolicySync(registry_url=settings.registry_url, redis=redis, poll_s=settings.policy_poll_s,
                            timeout_s=settings.registry_timeout_s, revision_gauge=metrics.policy_revision)
        predictor = Predictor(policy=policy, features=features, triton=triton, events=events, metrics=metrics,
                              max_instances=settings.max_instances, shadow_max_in_flight=settings.shadow_max_in_flight,
                              batch_max_rows=settings.batch_max_rows, batch_max_in_flight=settings.batch_max_in_flight,
                              batch_max_queued=settings.batch_max_queued, tracer=tracer)
        passthrough = TritonPassthrough(triton_http_url=settings.triton_http_url, timeout_s=settings.inference_timeout_s,
                                        events=events, metrics=metrics)
        pinning = RemoteAuthorizer(registry_url=settings.registry_url, role=PINNING_ROLE,
                                   timeout_s=settings.registry_timeout_s, ttl_s=settings.pinning_auth_ttl_s,
                                   limiter=KeyRateLimiter(on_limited=metrics.rate_limited.inc))
        busy_poll = BusyPoll(grace_s=settings.busy_poll_us / 1e6)
        gateway = cls(settings, metrics, redis, policy, triton, features, events, predictor, passthrough, pinning,
                      busy_poll)
        events.start()
        features.start()
        policy.start()
        return gateway

    async def close(self) -> None:
        self.busy_poll.close()
        await self.policy.close()
        await self.predictor.close()
        await self.events.close()
        await self.passthrough.close()
        await self.pinning.close()
        await self.triton.close()
        await self.features.close()
        await self.redis.aclose()

    async def readiness(self) -> dict[str, bool]:
        return {
            "routing_table": self.policy.book is not None,
            "triton": await self.triton.live(),
            "redis": await self._redis_answers(),
        }

    async def _redis_answers(self) -> bool:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(PING_TIMEOUT_S):
                return bool(await self.redis.ping())
        return False
