"""The monitor's Prometheus metrics, on the app-owned registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class MonitorMetrics:
    events_processed: Counter
    events_invalid: Counter
    processing_lag: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> MonitorMetrics:
        return cls(
            events_processed=Counter(
                "mlfleet_monitor_events_processed", "Prediction events counted into the aggregates.",
                ["model", "version"], registry=registry,
            ),
            events_invalid=Counter(
                "mlfleet_monitor_events_invalid", "Stream entries acknowledged without being counted (invalid).",
                registry=registry,
            ),
            processing_lag=Gauge(
                "mlfleet_monitor_processing_lag_seconds",
                "Seconds between the newest entry of the last batch being added to the stream and being counted.",
                registry=registry,
            ),
        )
