"""The monitor's Prometheus metrics, on the app-owned registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass(frozen=True)
class MonitorMetrics:
    events_processed: Counter
    events_invalid: Counter
    samples_skipped: Counter
    processing_lag: Gauge
    drift: Gauge
    drift_verdict: Gauge
    drift_window: Gauge
    live_accuracy: Gauge
    live_labelled: Gauge
    feedback: Counter
    alerts: Counter
    deliveries: Counter
    rate_limited: Counter

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
            samples_skipped=Counter(
                "mlfleet_monitor_samples_skipped",
                "Successful prediction events left out of the live stream by `samples_per_s` (still counted).",
                ["model"], registry=registry,
            ),
            processing_lag=Gauge(
                "mlfleet_monitor_processing_lag_seconds",
                "Seconds between the newest entry of the last batch being added to the stream and being counted.",
                registry=registry,
            ),
            drift=Gauge(
                "mlfleet_monitor_drift", "Drift statistic of a feature (or `score`) in the version's current window.",
                ["model", "version", "feature", "statistic"], registry=registry,
            ),
            drift_verdict=Gauge(
                "mlfleet_monitor_drift_verdict",
                "Current drift verdict: 0 ok, 1 retrain, 2 rollback, -1 no verdict (too few samples, no reference).",
                ["model", "version"], registry=registry,
            ),
            drift_window=Gauge(
                "mlfleet_monitor_drift_window_instances", "Instances in the version's current drift window.",
                ["model", "version"], registry=registry,
            ),
            live_accuracy=Gauge(
                "mlfleet_monitor_live_accuracy", "Accuracy over the labelled feedback of the alert rules' window.",
                ["model", "version"], registry=registry,
            ),
            live_labelled=Gauge(
                "mlfleet_monitor_live_labelled", "Labelled predictions behind `mlfleet_monitor_live_accuracy`.",
                ["model", "version"], registry=registry,
            ),
            feedback=Counter(
                "mlfleet_monitor_feedback", "Feedback labels by outcome (accepted, duplicate, late, unknown, invalid).",
                ["outcome"], registry=registry,
            ),
            alerts=Counter(
                "mlfleet_monitor_alerts", "Alerts by rule and severity; `suppressed` ones were within their cooldown, `resolved` "
                "ones no longer broken.",
                ["rule", "severity", "outcome"], registry=registry,
            ),
            deliveries=Counter(
                "mlfleet_monitor_alert_deliveries", "Alert deliveries by sink and outcome (delivered, retried, failed, dropped).",
                ["sink", "outcome"], registry=registry,
            ),
            rate_limited=Counter(
                "mlfleet_monitor_rate_limited", "Feedback requests refused (429): their key was over its rate limit.",
                registry=registry,
            ),
        )
