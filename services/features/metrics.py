"""The features service's own Prometheus metrics, on the app's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class FeatureMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.online_rows = Counter(
            "mlfleet_features_online_rows", "Entity rows looked up online.", registry=registry
        )
        self.pushed_rows = Counter(
            "mlfleet_features_pushed_rows",
            "Rows pushed to the online store.",
            ["push_source"],
            registry=registry,
        )
        self.materialized_rows = Counter(
            "mlfleet_features_materialized_rows",
            "Offline rows materialized.",
            ["feature_view"],
            registry=registry,
        )
