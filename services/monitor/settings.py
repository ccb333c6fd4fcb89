"""Configuration of the monitor service (env prefix ``MLFLEET_MONITOR_``)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.common.redis import PREDICTIONS_STREAM
from services.common.settings import ServiceSettings
from services.monitor.alerts import AlertRules
from services.monitor.drift import DriftThresholds


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
    batch_linger_ms: int = Field(
        default=100, ge=0, le=5_000,
        description="After a batch smaller than batch_size, wait this long before the next read, so entries "
                    "accumulate: one transaction per ~100 ms instead of one per handful of events (the monitor "
                    "otherwise spends most of its CPU on per-batch round trips at moderate rates).",
    )
    commit_timeout_s: float = Field(
        default=5.0, gt=0, le=60,
        description="Longest one batch's transaction (counts, samples and XACK) may take; past it the batch is "
                    "read again later, never counted twice. Must stay well below reclaim_idle_ms.",
    )
    reclaim_idle_ms: int = Field(
        default=60_000, ge=1,
        description="Entries pending this long on another consumer are taken over (XAUTOCLAIM); "
                    "must exceed the longest time a live consumer holds a batch.",
    )
    bucket_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=60,
        description="Retention of the per-bucket aggregates; also the longest window one can query by `start` and "
                    "`end` (a `window_s` is also capped by `query_window_max_s`).",
    )
    query_window_max_s: float = Field(
        default=24 * 3600.0, gt=0,
        description="Longest `window_s` `GET /v1/models/{model}/metrics` and `.../series` answer for: a window reads "
                    "one aggregate per 10 s bucket and version, so a week is ~60,000 reads per version on the Redis "
                    "the gateways share. Longer spans are Prometheus's job (`mlfleet_gateway_*`). A window given by "
                    "`start` and `end` (the rollout controller's steps) is bounded by `bucket_ttl_s` alone.",
    )
    retry_max_s: float = Field(
        default=5.0, gt=0, description="Longest pause between attempts while Redis is unreachable."
    )

    registry_url: str = Field(
        default="http://127.0.0.1:8081", description="Base URL of the registry (reference profiles, traffic split, feedback callers' keys)."
    )
    registry_api_key: SecretStr | None = Field(
        default=None, description="API key (role viewer) sent to the registry as `Authorization: Bearer <key>`."
    )
    registry_api_key_file: Path | None = Field(
        default=None, description="File holding the registry API key (wins over `registry_api_key`)."
    )
    registry_timeout_s: float = Field(default=5.0, gt=0, description="Deadline of one call to the registry.")
    auth_ttl_s: float = Field(
        default=30.0, gt=0,
        description="How long the registry's answer about a feedback caller's API key is cached (revocation delay).",
    )
    profile_cache_s: float = Field(
        default=300.0, ge=0, description="How long a version's reference profile is cached (a missing one: a tenth)."
    )
    samples_max: int = Field(
        default=5000, ge=10, description="Prediction events kept per version in Redis for drift windows (capped stream)."
    )
    samples_per_s: float = Field(
        default=500.0, ge=0,
        description="Prediction events per second and version (per monitor replica) written to the live stream "
                    "that drift windows read, after a burst of up to `samples_max`. Above it each consumer batch "
                    "contributes a uniform random subset of its events (the rest are counted in "
                    "`mlfleet_monitor_samples_skipped_total`), so under steady load the stream spans about "
                    "`samples_max / samples_per_s` seconds of traffic (10 s by default) instead of the last fraction "
                    "of a second, and drift windows hold the newest sampled instances. Counts, latency and feedback "
                    "still see every event. 0: sample every event.",
    )
    drift_window: Literal["count", "time"] = Field(
        default="count", description="Default drift window: the last `drift_window_size` instances, "
                                     "or the instances of the last `drift_window_s` seconds. With `time`, "
                                     "samples are spread over the window: at most `samples_max / drift_window_s` "
                                     "a second and version, so the live stream spans the whole window rather "
                                     "than its last seconds.",
    )
    drift_window_size: int = Field(default=1000, ge=10, description="Instances in a count-based drift window.")
    drift_window_s: float = Field(default=3600.0, gt=0, description="Seconds covered by a time-based drift window.")
    drift_interval_s: float = Field(
        default=10.0, gt=0, description="How often each version's current window is compared with its reference."
    )
    drift: DriftThresholds = Field(
        default_factory=DriftThresholds, description="Drift thresholds of every model (JSON)."
    )
    drift_overrides: dict[str, DriftThresholds] = Field(
        default_factory=dict, description='Per-model drift thresholds (JSON), e.g. `{"fraud": {"ks": 0.2}}`.'
    )
    drift_history_max: int = Field(default=500, ge=1, description="Drift evaluations kept per version.")
    prediction_ttl_s: int = Field(
        default=24 * 3600, ge=1, description="How long a prediction waits for its ground-truth label (feedback)."
    )
    seen_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=1,
        description="How long after its prediction feedback for a request id that is no longer joinable is "
                    "reported late rather than unknown. A UUIDv7 request id (the gateway's own) carries its time; "
                    "any other id is remembered in Redis this long.",
    )
    feedback_max_batch: int = Field(default=1000, ge=1, description="Most labels in one feedback request.")
    alert_rules: AlertRules = Field(
        default_factory=AlertRules, description="Thresholds of the accuracy, error-rate and latency rules (JSON)."
    )
    alert_rules_overrides: dict[str, AlertRules] = Field(
        default_factory=dict, description="Per-model alert thresholds (JSON)."
    )
    alert_interval_s: float = Field(default=15.0, gt=0, description="How often the metric rules are checked.")
    alert_cooldown_s: float = Field(
        default=900.0, ge=0, description="An alert (rule, model, version, action) pages at most once per cooldown while "
                                        "it holds (reminders); resolving it lifts the cooldown."
    )
    alert_resolve_after_s: float = Field(
        default=300.0, ge=0,
        description="An active alert resolves once checks have found its rule clear for this long (Prometheus's "
                    "`keep_firing_for`): a metric hovering around its threshold is one incident, not a page and a "
                    "resolution at every crossing. A breach meanwhile starts the hold again; an alert whose version "
                    "is no longer listed resolves at once. 0: at the first clear check.",
    )
    alert_history_max: int = Field(default=1000, ge=1, description="Alerts kept in the history.")
    alert_webhook_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Webhooks receiving Alertmanager-compatible bodies (comma-separated or JSON)."
    )
    retrain_webhook_url: str | None = Field(
        default=None, description="Webhook receiving a Kubeflow-Pipelines-style run request on drift and accuracy alerts."
    )
    retrain_pipeline_id: str = Field(default="mlfleet-retrain", description="`pipeline_id` of the retraining run.")
    retrain_min_interval_s: float = Field(
        default=6 * 3600.0, ge=0,
        description="At most one retraining run per model in this long, across monitor replicas: a drift or "
                    "accuracy alert's reminders (every `alert_cooldown_s`) and versions drifting together start one "
                    "run, not one each (the others are counted `suppressed` in `mlfleet_monitor_alert_deliveries_total`). "
                    "A run request that fails every attempt frees the model for the next alert. "
                    "0: every firing alert starts one.",
    )
    retrain_pipeline_version_id: str | None = Field(default=None, description="`pipeline_version_id`, if pinned.")
    retrain_experiment_id: str | None = Field(default=None, description="`experiment_id` of the run, if any.")
    public_url: str | None = Field(
        default=None, description="URL the monitor is reached at, for links in alerts (default http://host:port)."
    )
    sink_timeout_s: float = Field(default=5.0, gt=0, description="Deadline of one webhook delivery.")
    sink_max_attempts: int = Field(default=10, ge=1, description="Attempts per delivery before it is dropped.")
    sink_retry_initial_s: float = Field(default=0.5, gt=0, description="First pause after a failed delivery.")
    sink_retry_max_s: float = Field(default=60.0, gt=0, description="Longest pause between delivery attempts.")
    sink_queue_size: int = Field(default=1000, ge=1, description="Deliveries waiting per sink; more are dropped.")

    @field_validator("alert_webhook_urls", mode="before")
    @classmethod
    def _url_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [u.strip() for u in text.split(",") if u.strip()]
        return value

    def registry_key(self) -> str | None:
        """The registry API key: the file's content when a file is configured, else the setting."""
        if self.registry_api_key_file is not None:
            return self.registry_api_key_file.read_text().strip() or None
        return self.registry_api_key.get_secret_value() if self.registry_api_key else None

    def drift_thresholds(self, model: str) -> DriftThresholds:
        return self.drift_overrides.get(model, self.drift)

    def sample_rate_per_s(self) -> float:
        """The live-sample budget per version and second: ``samples_per_s``; with time-based drift windows, no more
        than the capped stream holds over one window, so a window's instances come from its whole span (a 1 h window
        read from a stream of the last 10 s would judge those 10 s)."""
        if self.drift_window != "time":
            return self.samples_per_s
        spread = self.samples_max / self.drift_window_s
        return spread if self.samples_per_s == 0 else min(self.samples_per_s, spread)

    def rules(self, model: str) -> AlertRules:
        return self.alert_rules_overrides.get(model, self.alert_rules)

    def monitor_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")
