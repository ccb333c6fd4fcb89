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
from services.registry.publisher import PolicyPublisher
from services.registry.settings import RegistrySettings
from services.registry.telemetry import RegistryMetrics
from services.registry.traffic import TrafficController
from services.registry.triton_repository import BACKEND_MODEL_PY, TritonRepository

logger = logging.getLogger("mlfleet.registry")


@dataclass
class Registry:
    settings: RegistrySettings
    database: Database
    triton: TritonRepository
    redis: aioredis.Redis
    catalog: Catalog
    traffic: TrafficController

    @classmethod
    async def open(cls, settings: RegistrySettings, metrics: RegistryMetrics) -> "Registry":
        database = Database(settings.database_url)
        await anyio.to_thread.run_sync(database.create_schema)
        artifacts = ArtifactStore(settings.artifacts_root)
        triton = TritonRepository(
            settings.triton_grpc_url, backend_model_py=BACKEND_MODEL_PY.read_bytes(),
            timeout_s=settings.triton_timeout_s, load_timeout_s=settings.triton_load_timeout_s,
            intra_op_threads=settings.intra_op_threads,
        )
        redis = connect(settings.redis_url)
        publisher = PolicyPublisher(redis, publishes=metrics.policy_publishes)
        return cls(
            settings=settings, database=database, triton=triton, redis=redis,
            catalog=Catalog(database=database, artifacts=artifacts, metrics=metrics,
                            max_artifact_bytes=settings.max_artifact_bytes),
            traffic=TrafficController(database=database, artifacts=artifacts, triton=triton, publisher=publisher,
                                      metrics=metrics),
        )

    async def close(self) -> None:
        await self.triton.close()
        await self.redis.aclose()
        await anyio.to_thread.run_sync(self.database.dispose)
        logger.info("registry resources closed")
