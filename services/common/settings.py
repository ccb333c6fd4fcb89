"""Settings shared by every service. Each service subclasses with env prefix ``MLFLEET_<SVC>_``."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path(".mlfleet")
FLEET_HOME_ENV = "MLFLEET_HOME"
"""The fleet-wide state folder (the CLI's, the container image's and the Helm chart's), which each service's own
``MLFLEET_<SVC>_HOME`` overrides."""


def fleet_home() -> Path:
    return Path(os.environ.get(FLEET_HOME_ENV) or DEFAULT_HOME)


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLFLEET_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the service binds to.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the service listens on.")
    home: Path = Field(default_factory=fleet_home,
                       description="Folder for the fleet's local state (data, artifacts, logs); default `MLFLEET_HOME`, "
                                   "else `.mlfleet`.")
    log_level: str = Field(default="info", description="Python log level.")
    cors_origins: list[str] = Field(
        default=[], description="Browser origins allowed to call the API (CORS), e.g. `[\"https://ops.example\"]`; "
                                "empty: CORS off, browsers refuse cross-origin calls.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above).")
