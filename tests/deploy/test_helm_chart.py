"""The Helm chart renders with Helm's own engine, lints clean, and every manifest passes
``kubernetes-validate --strict`` — for the default values and for GPU/HPA/ingress values."""

from __future__ import annotations

import subprocess

import helm_python
import pytest
import yaml
from helm_python import Chart

from tests.deploy.chart import CHART, PRODUCTION, by_kind, render
from tests.deploy.tools import venv_tool

CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
"""Kinds from CRDs, which kubernetes-validate has no schema for; checked by hand below."""


@pytest.mark.parametrize("values", [None, PRODUCTION], ids=["defaults", "gpu-hpa-ingress"])
def test_chart_lints_clean(values):
    report = helm_python.lint(CHART, values, strict=True, kube_version="v1.31.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", [None, PRODUCTION], ids=["defaults", "gpu-hpa-ingress"])
def test_every_manifest_passes_kubernetes_validate_strict(values, tmp_path):
    manifests = render(values)
    files = []
    for index, manifest in enumerate(manifests):
        path = tmp_path / f"{index:02d}-{manifest['kind']}.yaml"
        path.write_text(yaml.safe_dump(manifest))
        files.append(str(path))
    result = subprocess.run([venv_tool("kubernetes-validate"), "--strict", *files], check=False, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = [line for line in result.stdout.splitlines() if line.startswith("INFO") and "passed" in line]
    assert len(passed) == len([m for m in manifests if m["kind"] not in CRD_KINDS])
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARN")]
    assert all(any(kind in line for kind in CRD_KINDS) for line in warnings), warnings


def test_default_values_run_non_root_read_only_with_secrets_by_reference():
    manifests = render(None)
    deployments = by_kind(manifests, "Deployment")
    assert set(deployments) == {f"fleet-mlfleet-{c}" for c in ("gateway", "registry", "features", "monitor", "triton")}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["readinessProbe"] and container["livenessProbe"]
            assert container["resources"]["requests"]
            if not name.endswith("triton"):
                assert "--no-server-header" in container["command"], "as under `mlfleet up`: no server banner"
    gateway = deployments["fleet-mlfleet-gateway"]["spec"]["template"]["spec"]
    assert {"name": "home", "emptyDir": {}} in gateway["volumes"]
    registry = deployments["fleet-mlfleet-registry"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in registry["containers"][0]["env"]}
    assert env["MLFLEET_REGISTRY_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "mlfleet-database", "key": "database-url"}
    assert any(v.get("secret", {}).get("secretName") == "mlfleet-admin-key" for v in registry["volumes"])
    config = by_kind(manifests, "ConfigMap")["fleet-mlfleet"]["data"]
    assert config["MLFLEET_REGISTRY_BOOTSTRAP_ADMIN_KEY_FILE"] == "/etc/mlfleet/admin/admin-key"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in config
    assert not by_kind(manifests, "HorizontalPodAutoscaler") and not by_kind(manifests, "Ingress")
    assert len(by_kind(manifests, "PodDisruptionBudget")) == 5
    triton_container = deployments["fleet-mlfleet-triton"]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in triton_container["resources"]["limits"]
    assert "--metrics-config=summary_latencies=false" in triton_container["args"], "Triton's costly summaries are opt-in"
    assert (config["MLFLEET_REGISTRY_TRITON_PLATFORM"], config["MLFLEET_REGISTRY_TRITON_GPU"]) == ("python", "false")
    for service in ("gateway", "features"):
        env = {e["name"]: e for e in deployments[f"fleet-mlfleet-{service}"]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env[f"MLFLEET_{service.upper()}_FEAST_REGISTRY_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": "mlfleet-database", "key": "database-url"}, "Feast's SQL registry defaults to the fleet's database"


def test_production_values_add_gpu_hpa_ingress_service_monitor_and_tracing():
    manifests = render(PRODUCTION)
    triton = by_kind(manifests, "Deployment")["fleet-mlfleet-triton"]["spec"]["template"]["spec"]
    assert triton["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--trace-config=opentelemetry,url=http://jaeger-collector.observability:4318/v1/traces" in triton["containers"][0]["args"]
    hpa = by_kind(manifests, "HorizontalPodAutoscaler")["fleet-mlfleet-gateway"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    assert "replicas" not in by_kind(manifests, "Deployment")["fleet-mlfleet-gateway"]["spec"]
    ingress = by_kind(manifests, "Ingress")["fleet-mlfleet"]
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "fleet-mlfleet-gateway"
    monitor = by_kind(manifests, "ServiceMonitor")["fleet-mlfleet"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"http", "metrics"}
    config = by_kind(manifests, "ConfigMap")["fleet-mlfleet"]["data"]
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger-collector.observability:4318"
    assert (config["MLFLEET_REGISTRY_TRITON_PLATFORM"], config["MLFLEET_REGISTRY_TRITON_GPU"]) == ("onnxruntime", "true")
    gateway = by_kind(manifests, "Deployment")["fleet-mlfleet-gateway"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in gateway["env"]}
    assert env["MLFLEET_GATEWAY_FEAST_REGISTRY_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "mlfleet-feast-registry", "key": "registry-url"}


def test_triton_latency_summaries_can_be_turned_on():
    triton = by_kind(render({"triton": {"latencySummaries": True}}), "Deployment")["fleet-mlfleet-triton"]
    assert "--metrics-config=summary_latencies=true" in triton["spec"]["template"]["spec"]["containers"][0]["args"]


def test_values_schema_rejects_a_bad_value():
    with Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema({"redis": {"url": "http://not-redis"}})


def test_values_schema_refuses_gpu_triton_on_the_python_backend():
    with Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError, match="onnxruntime"):
        chart.validate_schema({"triton": {"gpu": {"enabled": True}}})


def test_values_schema_refuses_a_second_triton_replica_and_upgrades_recreate_it():
    """Models are loaded into the one Triton pod the registry reaches; a second would serve none of them, and a
    rolling update would run one beside the old during every upgrade."""
    triton = by_kind(render({}), "Deployment")["fleet-mlfleet-triton"]
    assert triton["spec"]["strategy"] == {"type": "Recreate"}
    with Chart.load(CHART) as chart:
        chart.validate_schema({"triton": {"replicas": 1}})
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema({"triton": {"replicas": 2}})


def test_the_registrys_artifacts_live_on_a_kept_claim_and_triton_stays_ready_while_versions_load():
    manifests = render(None)
    claim = by_kind(manifests, "PersistentVolumeClaim")["fleet-mlfleet-registry"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    registry = by_kind(manifests, "Deployment")["fleet-mlfleet-registry"]["spec"]
    volumes = {v["name"]: v for v in registry["template"]["spec"]["volumes"]}
    assert volumes["home"]["persistentVolumeClaim"]["claimName"] == "fleet-mlfleet-registry"
    assert volumes["tmp"]["emptyDir"]["sizeLimit"] == "256Mi" and "medium" not in volumes["tmp"]["emptyDir"]
    assert registry["strategy"] == {"type": "Recreate"}, "a ReadWriteOnce claim moves between pods one at a time"
    triton = by_kind(manifests, "Deployment")["fleet-mlfleet-triton"]["spec"]["template"]["spec"]
    assert "--strict-readiness=false" in triton["containers"][0]["args"]
    config = by_kind(manifests, "ConfigMap")["fleet-mlfleet"]["data"]
    assert config["MLFLEET_REGISTRY_PUBLIC_URL"] == "http://fleet-mlfleet-registry.ml.svc:8081"
    assert config["MLFLEET_MONITOR_PUBLIC_URL"] == "http://fleet-mlfleet-monitor.ml.svc:8083"


def test_an_existing_claim_pull_secrets_and_public_urls_are_taken_as_given():
    manifests = render({"imagePullSecrets": [{"name": "ngc"}],
                        "registry": {"publicUrl": "https://registry.example.com",
                                     "persistence": {"enabled": True, "size": "1Gi", "accessModes": ["ReadWriteMany"],
                                                     "existingClaim": "artifacts"}}})
    assert "PersistentVolumeClaim" not in {m["kind"] for m in manifests}
    deployments = by_kind(manifests, "Deployment")
    registry = deployments["fleet-mlfleet-registry"]["spec"]
    assert {v["name"]: v for v in registry["template"]["spec"]["volumes"]}["home"]["persistentVolumeClaim"] == {
        "claimName": "artifacts"}
    assert "strategy" not in registry, "a ReadWriteMany claim allows a rolling update"
    assert deployments["fleet-mlfleet-triton"]["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "ngc"}]
    assert by_kind(manifests, "ConfigMap")["fleet-mlfleet"]["data"]["MLFLEET_REGISTRY_PUBLIC_URL"] == \
        "https://registry.example.com"


def test_values_schema_refuses_registry_replicas_that_would_not_share_their_artifacts():
    with Chart.load(CHART) as chart:
        with pytest.raises(helm_python.HelmValuesError):
            chart.validate_schema({"registry": {"replicas": 2}})
        chart.validate_schema({"registry": {"replicas": 2, "persistence": {
            "enabled": True, "size": "10Gi", "accessModes": ["ReadWriteMany"]}}})


def test_the_service_monitor_scrapes_no_tritons_inference_port():
    """It scrapes every mlfleet Service's ``http`` and ``metrics`` ports: Triton's inference port must be neither."""
    services = by_kind(render(PRODUCTION), "Service")
    ports = {p["name"]: p for p in services["fleet-mlfleet-triton"]["spec"]["ports"]}
    assert set(ports) == {"triton-http", "triton-grpc", "metrics"}
    assert (ports["triton-http"]["appProtocol"], ports["triton-grpc"]["appProtocol"]) == ("http", "grpc"), \
        "a mesh that reads protocols from port names gets them from appProtocol"


def test_the_monitor_reads_the_registry_with_a_viewer_key_of_its_own_when_given_one():
    def monitor_pod(manifests):
        return by_kind(manifests, "Deployment")["fleet-mlfleet-monitor"]["spec"]["template"]["spec"]

    default = render(None)
    assert {v["name"] for v in monitor_pod(default)["volumes"]} >= {"admin-key"}
    own = render({"monitor": {"registryKey": {"existingSecret": "mlfleet-monitor-key", "existingSecretKey": "api-key"}}})
    volumes = {v["name"]: v for v in monitor_pod(own)["volumes"]}
    assert "admin-key" not in volumes, "the monitor no longer holds the bootstrap admin key"
    assert volumes["monitor-key"]["secret"]["secretName"] == "mlfleet-monitor-key"
    assert by_kind(own, "ConfigMap")["fleet-mlfleet"]["data"]["MLFLEET_MONITOR_REGISTRY_API_KEY_FILE"] == \
        "/etc/mlfleet/monitor/api-key"
    registry = by_kind(own, "Deployment")["fleet-mlfleet-registry"]["spec"]["template"]["spec"]
    assert "admin-key" in {v["name"] for v in registry["volumes"]}


def test_the_chart_ships_the_same_alerting_rules_as_compose_for_the_prometheus_operator():
    """``files/rules.yml`` is a copy (Helm reads files inside the chart only) of the rules promtool checks."""
    shipped = (CHART / "files" / "rules.yml").read_text()
    assert shipped == (CHART.parents[1] / "prometheus" / "rules.yml").read_text(), \
        "copy deploy/prometheus/rules.yml to deploy/helm/mlfleet/files/rules.yml"
    assert "PrometheusRule" not in {m["kind"] for m in render(None)}
    rule = by_kind(render(PRODUCTION), "PrometheusRule")["fleet-mlfleet"]
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["spec"]["groups"] == yaml.safe_load(shipped)["groups"]
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert any("{{ $labels.model }}" in a["annotations"]["summary"] for a in alerts), "Prometheus's templates kept"
