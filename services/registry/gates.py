"""The validation gate: which of a model's gates a version's reported metrics fail."""

from __future__ import annotations

from collections.abc import Mapping

from services.registry.schemas import Gates

GATED_METRICS = {"min_auc": "auc", "min_accuracy": "accuracy"}
"""Each gate and the metric it bounds from below."""


def gate_failures(gates: Gates, metrics: Mapping[str, float]) -> list[str]:
    """Reasons the version fails ``gates``, e.g. ``"auc 0.71 < min_auc 0.90"``; empty when it passes.

    A metric a gate needs but the version does not report fails that gate.
    """
    reasons = []
    for gate, metric in GATED_METRICS.items():
        threshold = getattr(gates, gate)
        if threshold is None:
            continue
        value = metrics.get(metric)
        if value is None:
            reasons.append(f"{metric} missing, required by {gate} {_number(threshold)}")
        elif value < threshold:
            reasons.append(f"{metric} {_number(value)} < {gate} {_number(threshold)}")
    return reasons


def _number(value: float) -> str:
    """Two decimals, or more where two would hide the difference (0.8999 stays 0.8999)."""
    return f"{value:.2f}" if abs(value - round(value, 2)) < 1e-12 else f"{value:.6g}"
