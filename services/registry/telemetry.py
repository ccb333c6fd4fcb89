"""The registry's Prometheus metrics, on the app's own registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class RegistryMetrics:
    policy_publishes: Counter
    versions: Counter
    triton_loads: Histogram
    rollout_verdicts: Counter
    rollout_events: Counter
    rollout_step_percent: Gauge
    rollbacks: Counter
    webhook_deliveries: Counter
    rate_limited: Counter
    artifacts_corrupted: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RegistryMetrics:
        return cls(
            policy_publishes=Counter(
                "mlfleet_registry_policy_publishes", "PolicyChanged messages, by outcome (published, failed).",
                ["outcome"], registry=registry,
            ),
            versions=Counter(
                "mlfleet_registry_versions", "Version uploads, by outcome (registered, rejected).",
                ["outcome"], registry=registry,
            ),
            triton_loads=Histogram(
                "mlfleet_registry_triton_load_seconds", "Time to (re)load a model's version set on Triton, by outcome.",
                ["outcome"], registry=registry, buckets=(0.5, 1, 2, 5, 10, 30, 60, 120),
            ),
            rollout_verdicts=Counter(
                "mlfleet_registry_rollout_verdicts", "Rollout controller verdicts (advance, hold, fail, promote).",
                ["verdict"], registry=registry,
            ),
            rollout_events=Counter(
                "mlfleet_registry_rollout_events", "Rollout events (started, advanced, promoted, rolled_back, aborted).",
                ["event"], registry=registry,
            ),
            rollout_step_percent=Gauge(
                "mlfleet_registry_rollout_step_percent",
                "Canary percent of the model's latest rollout: its step, 100 once promoted, 0 once rolled back or aborted.",
                ["model"], registry=registry,
            ),
            rollbacks=Counter(
                "mlfleet_registry_rollbacks", "Rollbacks by trigger: `automatic` (the controller) or `manual`.",
                ["model", "trigger"], registry=registry,
            ),
            webhook_deliveries=Counter(
                "mlfleet_registry_webhook_deliveries", "Webhook posts, by outcome (delivered, retried, failed, dropped).",
                ["outcome"], registry=registry,
            ),
            artifacts_corrupted=Counter(
                "mlfleet_registry_artifacts_corrupted",
                "Triton loads refused because a stored artifact is missing or does not match its sha256.",
                registry=registry,
            ),
            rate_limited=Counter(
                "mlfleet_registry_rate_limited", "Requests refused (429) because their key was over its rate limit.",
                registry=registry,
            ),
        )
