"""The registry's Prometheus metrics, on the app's own registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass(frozen=True)
class RegistryMetrics:
    policy_publishes: Counter
    versions: Counter
    triton_loads: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> "RegistryMetrics":
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
        )
