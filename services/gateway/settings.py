"""Gateway settings, read from ``MLFLEET_GATEWAY_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MLFLEET_GATEWAY_", extra="ignore")

    port: int = Field(default=8080, ge=1, le=65535, description="Port the gateway listens on.")
    registry_url: str = Field(default="http://127.0.0.1:8081", description="Base URL of the registry (routing table source).")
    triton_http_url: str = Field(
        default="127.0.0.1:8000",
        description="Triton's HTTP endpoint (host:port, or a URL such as http://triton:8000): predictions (binary "
                    "tensors on kept-alive connections) and "
                    "the /v2 pass-through.",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis for prediction events, policy messages and Feast.")
    feast_dir: Path | None = Field(default=None, description="Feast repo folder (file registry); defaults to <home>/feast.")
    feast_registry_url: str | None = Field(
        default=None, description="SQLAlchemy URL of Feast's SQL registry (the features service's); empty: the file "
                                  "registry under `feast_dir`.",
    )
    inference_timeout_s: float = Field(default=2.0, gt=0, description="Deadline of one Triton call before answering 503.")
    feature_timeout_s: float = Field(default=0.5, gt=0, description="Deadline of one online feature lookup before answering 504.")
    registry_timeout_s: float = Field(default=2.0, gt=0, description="Deadline of one routing-table fetch from the registry.")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above).")
    max_instances: int = Field(default=1024, ge=1, description="Most instances in one predict request (422 above).")
    event_queue_size: int = Field(default=10_000, ge=1, description="Prediction events buffered in memory; more are dropped and counted.")
    event_batch_size: int = Field(default=256, ge=1, description="Most events written to Redis in one call.")
    event_linger_ms: float = Field(
        default=10.0, ge=0, le=1000,
        description="After the first queued event, wait this long for more before writing to Redis: fewer, larger "
                    "writes under light load; events reach the stream at most this much later.",
    )
    events_maxlen: int = Field(default=1_000_000, ge=1, description="Approximate length cap (MAXLEN ~) of the predictions stream.")
    policy_poll_s: float = Field(default=5.0, gt=0, description="Period of the routing-table poll that repairs missed policy messages.")
    shadow_max_in_flight: int = Field(default=64, ge=0, description="Most mirrored shadow inferences running at once; more are skipped.")
    batch_max_rows: int = Field(
        default=64, ge=1,
        description="Most instance rows in one micro-batch (one feature lookup and one Triton call); at most the Triton "
                    "model's `max_batch_size`. A larger request goes alone, in several Triton calls of this size.",
    )
    batch_max_in_flight: int = Field(
        default=1, ge=1,
        description="Micro-batches of one model version running at once; requests arriving while that many run wait "
                    "for the next batch (a request that finds fewer running starts one at once). One: larger batches, "
                    "fewer Triton calls and lookups; on 2 cores shared with Triton it served more than 2 (see the "
                    "README's Performance). The price: a call that hangs holds its version's requests until its "
                    "deadline (`inference_timeout_s`), and a batch's lookup never overlaps the same version's previous Triton call; "
                    "where Triton has cores of its own, measure 2.",
    )
    batch_max_queued: int = Field(
        default=1024, ge=1,
        description="Requests of one model version waiting for a micro-batch; one more is answered 503 (`overloaded`, "
                    "with `Retry-After`) at once instead of waiting behind them, so an overload sheds requests "
                    "rather than answering every one too late. A canary's overflow is answered by stable.",
    )
    busy_poll_us: float = Field(
        default=0, ge=0, le=1_000_000,
        description="Busy polling: while predictions are in flight, and this long after the last one, the event loop "
                    "polls its sockets instead of sleeping, so replies are picked up without a wake-up (on the "
                    "2-core development VM: p50 1.4 → 1.0 ms at one connection). It costs a core while requests "
                    "are in flight; 0 (off) where CPU limits or CPU-based autoscaling apply. The local fleet "
                    "(`mlfleet up`, the demo, the benchmark) turns it on.",
    )
    feast_registry_refresh_s: float = Field(
        default=5.0, gt=0,
        description="Period of the Feast registry refresh (in a worker thread, never inside a lookup); new feature "
                    "views reach the gateway within it.",
    )
    pinning_auth_ttl_s: float = Field(
        default=30.0, gt=0,
        description="How long the registry's answer about a pinning caller's API key is cached (revocation delay).",
    )

    @model_validator(mode="after")
    def _default_feast_dir(self) -> GatewaySettings:
        if self.feast_dir is None:
            self.feast_dir = self.home / "feast"
        return self
