"""Configuration of the registry service (env prefix ``MLFLEET_REGISTRY_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings

MIB = 1024 * 1024


class RegistrySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MLFLEET_REGISTRY_", extra="ignore")

    port: int = Field(default=8081, ge=1, le=65535, description="Port the service listens on.")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the registry database, e.g. `postgresql+psycopg://user@host/db`; "
                    "empty means SQLite at `<home>/registry.db`.",
    )
    triton_grpc_url: str = Field(
        default="127.0.0.1:8001", description="Triton's gRPC endpoint (`host:port`); models are loaded through its repository API."
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis on which traffic-policy changes are published."
    )
    artifacts_dir: Path | None = Field(
        default=None, description="Folder of the content-addressed ONNX artifacts; default `<home>/artifacts`."
    )
    max_artifact_bytes: int = Field(default=64 * MIB, ge=1, description="Largest ONNX artifact accepted (bigger gets 413).")
    triton_timeout_s: float = Field(default=5.0, gt=0, description="Deadline of Triton health and readiness calls.")
    triton_load_timeout_s: float = Field(default=120.0, gt=0, description="Deadline of one Triton model (re)load.")
    intra_op_threads: int = Field(default=1, ge=1, le=64, description="onnxruntime intra-op threads per Triton model instance.")
    reconcile_interval_s: float = Field(
        default=30.0, gt=0,
        description="How often the registry checks that Triton serves every version a policy needs, and reloads "
                    "what is missing (first check at startup).",
    )

    @model_validator(mode="after")
    def _database_under_home(self) -> "RegistrySettings":
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.home / 'registry.db').resolve()}"
        return self

    @property
    def artifacts_root(self) -> Path:
        return self.artifacts_dir or self.home / "artifacts"
