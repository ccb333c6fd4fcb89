"""The Helm chart rendered with Helm's own engine, as the deployment tests read it."""

from __future__ import annotations

from pathlib import Path

import yaml
from helm_python import Chart

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "mlfleet"
PRODUCTION = yaml.safe_load((CHART / "ci" / "gpu-hpa-ingress-values.yaml").read_text())
"""The production-like values: GPU Triton, autoscaled gateways, ingress, ServiceMonitor, PrometheusRule, tracing."""


def render(values: dict | None) -> list[dict]:
    """Every manifest the chart renders for ``values`` (release ``fleet`` in namespace ``ml``)."""
    with Chart.load(CHART) as chart:
        rendered = chart.render(values, name="fleet", namespace="ml")
    return [doc for name, text in rendered.items() if name.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def by_kind(manifests: list[dict], kind: str) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}
