"""Configuration of the monitor service (env prefix ``MLFLEET_MONITOR_``)."""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.redis import PREDICTIONS_STREAM
from services.common.settings import ServiceSettings


def default_consumer_name() -> str:
    """``hostname-pid``: unique per process, so a restarted monitor is a new consumer."""
    return f"{socket.gethostname()}-{os.getpid()}"


class MonitorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MLFLEET_MONITOR_", extra="ignore")

    port: int = Field(default=8083, ge=1, le=65535, description="Port the service listens on.")
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis holding the events stream and the aggregates."
    )
    stream: str = Field(
        default=PREDICTIONS_STREAM, min_length=1, description="Redis stream of prediction events to consume."
    )
    group: str = Field(
        default="monitor", min_length=1,
        description="Consumer group; monitors sharing it split the stream. Run one group per fleet.",
    )
    consumer_name: str = Field(
        default_factory=default_consumer_name, min_length=1,
        description="This consumer's name in the group; its pending entries are re-read when it restarts.",
    )
    batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Most entries read (and committed together) per XREADGROUP."
    )
    block_ms: int = Field(default=1000, ge=1, le=60_000, description="How long one XREADGROUP waits for entries.")
    reclaim_idle_ms: int = Field(
        default=60_000, ge=1,
        description="Entries pending this long on another consumer are taken over (XAUTOCLAIM); "
                    "must exceed the longest time a live consumer holds a batch.",
    )
    bucket_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=60,
        description="Retention of the per-bucket aggregates; also the longest window one can query.",
    )
    retry_max_s: float = Field(
        default=5.0, gt=0, description="Longest pause between attempts while Redis is unreachable."
    )
