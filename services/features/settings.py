"""Settings of the features service (env prefix ``MLFLEET_FEATURES_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class FeaturesSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MLFLEET_FEATURES_", extra="ignore")

    port: int = Field(
        default=8082, ge=1, le=65535, description="Port the features service listens on."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis holding Feast's online store."
    )
    feast_dir: Path | None = Field(
        default=None,
        description="Folder of Feast's file registry (`registry.db`); default `<home>/feast`.",
    )
    feast_registry_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of Feast's SQL registry, e.g. `postgresql+psycopg://…` (shared with the gateways "
        "when they run on other machines); empty: the file registry under `feast_dir`.",
    )
    registry_url: str = Field(
        default="http://127.0.0.1:8081",
        description="Base URL of the registry, asked about the API keys of callers that push or materialize.",
    )
    registry_timeout_s: float = Field(default=5.0, gt=0, description="Deadline of one call to the registry.")
    auth_ttl_s: float = Field(
        default=30.0, gt=0,
        description="How long the registry's answer about a caller's API key is cached (revocation delay).",
    )
    data_dir: Path | None = Field(
        default=None,
        description="Folder of the offline sources `users.parquet` and `merchants.parquet`; "
        "default `<home>/data`.",
    )

    @model_validator(mode="after")
    def _folders_under_home(self) -> FeaturesSettings:
        if self.feast_dir is None:
            self.feast_dir = self.home / "feast"
        if self.data_dir is None:
            self.data_dir = self.home / "data"
        return self
