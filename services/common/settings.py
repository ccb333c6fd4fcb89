"""Settings shared by every service. Each service subclasses with env prefix ``MLFLEET_<SVC>_``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path(".mlfleet")


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLFLEET_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the service binds to.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the service listens on.")
    home: Path = Field(default=DEFAULT_HOME, description="Folder for the fleet's local state (data, artifacts, logs).")
    log_level: str = Field(default="info", description="Python log level.")
    cors_origins: list[str] = Field(
        default=[], description="Browser origins allowed to call the API (CORS), e.g. `[\"https://ops.example\"]`; "
                                "empty: CORS off, browsers refuse cross-origin calls.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above).")
