"""Configuration of the registry service (env prefix ``MLFLEET_REGISTRY_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.common.settings import ServiceSettings

MIB = 1024 * 1024


def sqlite_url(home: Path) -> str:
    """The registry's default database: SQLite at ``<home>/registry.db``."""
    return f"sqlite:///{(home / 'registry.db').resolve()}"


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
    triton_platform: Literal["python", "onnxruntime"] = Field(
        default="python",
        description="How Triton runs the ONNX files: `python` (the Python backend running onnxruntime; works with "
                    "the CPU-only Triton of `mlfleet up`) or `onnxruntime` (Triton's native `onnxruntime_onnx` "
                    "platform, e.g. NGC's GPU image; the graph's tensors are renamed to `input`, `label` and "
                    "`probabilities` when pushed).",
    )
    triton_gpu: bool = Field(
        default=False, description="Run models on GPU (`KIND_GPU` instance group); needs `triton_platform: onnxruntime`.",
    )
    reconcile_interval_s: float = Field(
        default=10.0, gt=0,
        description="How often the registry checks that Triton serves every version a policy needs, and only those: "
                    "it reloads what is missing (after a Triton restart, say), and unloads what no policy needs "
                    "(first check at startup). A pass asks Triton about every registered version of each model.",
    )
    unneeded_version_grace_s: float = Field(
        default=180.0, ge=0,
        description="How long a version Triton serves stays loaded after no policy needs it, before the reconcile "
                    "loop unloads it: longer than a load (`triton_load_timeout_s`) and a gateway's policy poll, so "
                    "another replica's change in flight, or a gateway that missed a change, still finds it.",
    )

    previous_stable_retention_s: float = Field(
        default=3600.0, ge=0,
        description="How long the previous stable version stays loaded on Triton after it stops being stable, so a "
                    "rollback is a policy change only; after that the reconcile loop unloads it (a later rollback "
                    "reloads it first).",
    )

    bootstrap_admin_key: SecretStr | None = Field(
        default=None,
        description="An admin API key accepted from the first start (registered hashed as `bootstrap-admin`). "
                    "Prefer `bootstrap_admin_key_file`; never put a key in code.",
    )
    bootstrap_admin_key_file: Path | None = Field(
        default=None, description="File holding the bootstrap admin key (a mounted secret); `mlfleet up` writes one.",
    )
    monitor_url: str = Field(
        default="http://127.0.0.1:8083", description="Base URL of the monitor, asked for canary vs stable metrics.",
    )
    monitor_timeout_s: float = Field(default=5.0, gt=0, description="Deadline of one metrics query to the monitor.")
    rollout_tick_s: float = Field(
        default=1.0, gt=0, description="How often the rollout controller looks for rollouts whose interval is over.",
    )
    controller_lease_s: float = Field(
        default=15.0, gt=0,
        description="Lease of the rollout controller in the database: only the registry replica holding it judges "
                    "rollouts; it renews it every third of this, and a replica that stops renewing is replaced "
                    "after at most this long.",
    )
    public_url: str | None = Field(
        default=None,
        description="URL the registry is reached at, for links in webhook bodies (`generatorURL`, `externalURL`); "
                    "default `http://<host>:<port>`.",
    )
    webhook_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated URLs that receive rollout events (Alertmanager-style JSON), e.g. a Slack relay.",
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="Deadline of one webhook delivery.")
    webhook_max_attempts: int = Field(default=6, ge=1, le=20, description="Deliveries tried per event and URL.")
    webhook_backoff_s: float = Field(
        default=1.0, gt=0, description="Pause before the first retry; doubled after each failure (at most 60 s).",
    )

    @field_validator("webhook_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    @model_validator(mode="after")
    def _gpu_needs_native_onnx(self) -> RegistrySettings:
        if self.triton_gpu and self.triton_platform != "onnxruntime":
            raise ValueError("triton_gpu needs triton_platform 'onnxruntime' (the Python backend runs on CPU)")
        return self

    @model_validator(mode="after")
    def _database_under_home(self) -> RegistrySettings:
        if not self.database_url:
            self.database_url = sqlite_url(self.home)
        return self

    def registry_url(self) -> str:
        """The URL links to this registry start with (no trailing slash)."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def artifacts_root(self) -> Path:
        return self.artifacts_dir or self.home / "artifacts"

    def bootstrap_key(self) -> str | None:
        """The bootstrap admin key from the setting or its file (stripped); ``None`` when neither is set."""
        if self.bootstrap_admin_key is not None:
            return self.bootstrap_admin_key.get_secret_value().strip() or None
        if self.bootstrap_admin_key_file is not None:
            return self.bootstrap_admin_key_file.read_text(encoding="utf-8").strip() or None
        return None
