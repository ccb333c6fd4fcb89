"""Everything the registry opens at startup, in one typed container kept on ``app.state``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio.to_thread
import redis.asyncio as aioredis

from services.common.redis import connect
from services.registry.artifacts import ArtifactStore
from services.registry.catalog import Catalog
from services.registry.database import Database
from services.registry.keys import KeyStore
from services.registry.lease import Lease
from services.registry.models import CONTROLLER_LEASE
from services.registry.monitor_client import MonitorClient
from services.registry.publisher import PolicyPublisher
from services.registry.rollout import RolloutController
from services.registry.settings import RegistrySettings
from services.registry.telemetry import RegistryMetrics
from services.registry.traffic import TrafficController
from services.registry.triton_repository import BACKEND_MODEL_PY, TritonRepository
from services.registry.webhooks import WebhookNotifier

logger = logging.getLogger("mlfleet.registry")


@dataclass
class Registry:
    settings: RegistrySettings
    database: Database
    triton: TritonRepository
    redis: aioredis.Redis
    catalog: Catalog
    traffic: TrafficController
    keys: KeyStore
    monitor: MonitorClient
    notifier: WebhookNotifier
    rollouts: RolloutController

    @classmethod
    async def open(cls, settings: RegistrySettings, metrics: RegistryMetrics) -> Registry:
        database = Database(settings.database_url)
        await anyio.to_thread.run_sync(database.migrate)
        artifacts = ArtifactStore(settings.artifacts_root)
        triton = TritonRepository(
            settings.triton_grpc_url, backend_model_py=BACKEND_MODEL_PY.read_bytes(),
            timeout_s=settings.triton_timeout_s, load_timeout_s=settings.triton_load_timeout_s,
            intra_op_threads=settings.intra_op_threads, platform=settings.triton_platform, gpu=settings.triton_gpu,
        )
        redis = connect(settings.redis_url)
        publisher = PolicyPublisher(redis, publishes=metrics.policy_publishes)
        keys = KeyStore(database)
        bootstrap_key = settings.bootstrap_key()
        if bootstrap_key:
            await keys.bootstrap(bootstrap_key)
        else:
            logger.warning("no bootstrap admin key configured (MLFLEET_REGISTRY_BOOTSTRAP_ADMIN_KEY[_FILE]); "
                           "only keys already in the database can call the API")
        traffic = TrafficController(database=database, artifacts=artifacts, triton=triton, publisher=publisher,
                                    metrics=metrics, previous_stable_retention_s=settings.previous_stable_retention_s,
                                    unneeded_grace_s=settings.unneeded_version_grace_s)
        monitor = MonitorClient(settings.monitor_url, timeout_s=settings.monitor_timeout_s)
        notifier = WebhookNotifier(settings.webhook_urls, timeout_s=settings.webhook_timeout_s,
                                   max_attempts=settings.webhook_max_attempts, backoff_s=settings.webhook_backoff_s,
                                   deliveries=metrics.webhook_deliveries, external_url=settings.registry_url())
        notifier.start()
        return cls(
            settings=settings, database=database, triton=triton, redis=redis,
            catalog=Catalog(database=database, artifacts=artifacts, metrics=metrics,
                            max_artifact_bytes=settings.max_artifact_bytes),
            traffic=traffic, keys=keys, monitor=monitor, notifier=notifier,
            rollouts=RolloutController(database=database, traffic=traffic, monitor=monitor, notifier=notifier,
                                       metrics=metrics, tick_s=settings.rollout_tick_s,
                                       lease=Lease(database, name=CONTROLLER_LEASE, ttl_s=settings.controller_lease_s)),
        )

    async def close(self) -> None:
        await self.notifier.close()
        await self.monitor.close()
        await self.triton.close()
        await self.redis.aclose()
        await anyio.to_thread.run_sync(self.database.dispose)
        logger.info("registry resources closed")
