"""docker-compose.yml passes the compose-spec schema; Prometheus config and rules pass promtool;
the Grafana dashboard has the case study's panels split by version/variant."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.deploy.tools import promtool, venv_tool
from tests.observability.metrics_doc import documented

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"


def run(argv: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=False, capture_output=True, text=True, cwd=cwd, timeout=120)


def undocumented_metrics(expressions) -> set[str]:
    """Metric names in PromQL ``expressions`` that no table of docs/metrics.md documents."""
    known = {name for section in documented().values() for name in section}
    used = {re.sub(r"_(bucket|sum|count|total)$", "", name)
            for expr in expressions for name in re.findall(r"\b(?:mlfleet|nv)_[a-z_]+\b", expr)}
    return used - known


def test_compose_file_passes_the_compose_spec():
    result = run([venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_wires_the_fleet_together():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"gateway", "registry", "features", "monitor", "redis", "postgres", "jaeger", "prometheus", "grafana",
            "triton", "triton-cpu"} <= set(services)
    assert services["triton"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["triton-cpu"]["profiles"] == ["cpu"]
    for name in ("triton", "triton-cpu"):  # Triton's costly latency summaries are opt-in, as under `mlfleet up`
        assert "--metrics-config=summary_latencies=${MLFLEET_TRITON_LATENCY_SUMMARIES:-false}" in services[name]["command"]
    for name in ("gateway", "registry", "features", "monitor"):
        assert services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
        assert services[name]["read_only"] is True
        assert "--no-server-header" in services[name]["command"], "as under `mlfleet up`: no server banner"
    assert services["registry"]["environment"]["MLFLEET_REGISTRY_BOOTSTRAP_ADMIN_KEY_FILE"] == "/run/secrets/admin_key"
    registry = services["registry"]["environment"]
    assert registry["MLFLEET_REGISTRY_TRITON_PLATFORM"] == "${MLFLEET_TRITON_PLATFORM:-python}"
    assert registry["MLFLEET_REGISTRY_TRITON_GPU"] == "${MLFLEET_TRITON_GPU:-false}"
    for name in ("gateway", "features"):
        assert services[name]["environment"][f"MLFLEET_{name.upper()}_FEAST_REGISTRY_URL"].startswith("${MLFLEET_DATABASE_URL")
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_prometheus_config_passes_promtool():
    result = run([promtool(), "check", "config", "prometheus.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {"gateway:8080", "registry:8081", "features:8082", "monitor:8083", "triton:8002"}


def test_alert_rules_pass_promtool_and_fire_on_their_series():
    checked = run([promtool(), "check", "rules", "rules.yml"], cwd=PROMETHEUS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run([promtool(), "test", "rules", "rules-test.yml"], cwd=PROMETHEUS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {r["alert"] for g in yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    rules = [r["expr"] for g in yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"] for r in g["rules"]]
    assert not undocumented_metrics(rules), "alert rules use metrics docs/metrics.md does not list"
    assert {"MlfleetHighP99Latency", "MlfleetHighErrorRate", "MlfleetFeaturesMissing", "MlfleetDataDriftRetrain",
            "MlfleetDataDriftRollback", "MlfleetRollbackHappened"} <= alerts


def test_grafana_dashboard_has_the_case_study_panels():
    dashboard = json.loads((GRAFANA / "dashboards" / "mlfleet.json").read_text())
    panels = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dashboard["panels"]}
    expected = {
        "p99 latency by variant": ("mlfleet_gateway_prediction_latency_seconds_bucket", "variant"),
        "Prediction rate by version and variant": ("mlfleet_gateway_predictions_total", "version, variant"),
        "Error rate and missing features by version and variant": ('status="error"', "version, variant"),
        "Live accuracy by version": ("mlfleet_monitor_live_accuracy", ""),
        "Drift score by version and feature": ("mlfleet_monitor_drift{", ""),
    }
    for title, (metric, split) in expected.items():
        assert metric in panels[title] and split in panels[title], title
    assert 'status="missing_features"' in panels["Error rate and missing features by version and variant"]
    assert not undocumented_metrics(panels.values()), "the dashboard uses metrics docs/metrics.md does not list"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "mlfleet.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert {d["uid"] for d in datasources["datasources"]} == {"mlfleet-prometheus", "mlfleet-jaeger"}
