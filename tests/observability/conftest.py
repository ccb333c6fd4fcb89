"""A traced fleet: an OTLP receiver, a Triton that exports its own traces to it, and the registry,
gateway, monitor and features services as real processes whose ``OTEL_*`` variables point at it."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mlfleet.demo.data import generate_dataset, write_offline_source
from mlfleet.runtime.processes import free_port, http_ok, start_process, stop_processes, wait_until
from mlfleet.runtime.triton import TritonLaunch, TritonRuntime
from tests.conftest import (
    ServiceProcess,
    ServiceSpec,
    TritonServer,
    start_service,
    start_services,
)
from tests.gateway.conftest import apply_user_stats, train_onnx
from tests.gateway.factories import signature
from tests.observability.otlp_receiver import OtlpReceiver

MODEL = "obs-fraud"
FEATURES_REDIS_DB = 7


@dataclass(frozen=True)
class TracedFleet:
    receiver: OtlpReceiver
    triton: TritonServer
    registry: ServiceProcess
    gateway: ServiceProcess
    monitor: ServiceProcess
    features: ServiceProcess
    admin_key: str

    def services(self) -> dict[str, ServiceProcess]:
        return {"registry": self.registry, "gateway": self.gateway, "monitor": self.monitor, "features": self.features}


@pytest.fixture(scope="session")
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    yield server
    server.stop()


def otel_env(receiver: OtlpReceiver) -> dict[str, str]:
    """What an operator sets to send the fleet's traces to a collector (here: the test receiver)."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100"}


def start_traced_triton(workdir: Path, receiver: OtlpReceiver) -> TritonServer:
    launch = TritonLaunch(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), workdir=workdir,
                          otlp_traces_url=f"{receiver.endpoint}/v1/traces", latency_summaries=True)
    # The summaries are opt-in (costly under load); on here, so the summary docs/metrics.md lists is checked too.
    argv, env = launch.command(TritonRuntime())
    argv += ["--trace-config=opentelemetry,bsp_schedule_delay=200", "--trace-config=opentelemetry,resource=service.name=triton"]
    log_file = workdir / "triton.log"
    process = start_process(argv, log_file=log_file, env=env)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{launch.http_port}/v2/health/live"), timeout_s=60,
               what="traced triton", process=process, log_file=log_file)
    return TritonServer(launch.http_port, launch.grpc_port, launch.metrics_port, process, log_file)


def register(registry_url: str, admin_key: str, model: str, artifacts: dict[int, bytes], **policy) -> None:
    """Register ``model`` and its versions as an admin, then set its traffic (which loads Triton)."""
    with httpx.Client(base_url=registry_url, timeout=120, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        client.post("/v1/models", json={"name": model, "gates": {"min_auc": None, "min_accuracy": None}}).raise_for_status()
        for artifact in artifacts.values():
            metadata = {"signature": signature().model_dump(mode="json"), "metrics": {"auc": 0.95, "accuracy": 0.9},
                        "reference_profile": {}, "lineage": {}}
            client.post(f"/v1/models/{model}/versions", files={"artifact": ("model.onnx", artifact)},
                        data={"metadata": json.dumps(metadata)}).raise_for_status()
        client.put(f"/v1/models/{model}/traffic", json=policy).raise_for_status()


@pytest.fixture(scope="session")
def traced_fleet(workdir, redis_url, receiver) -> Iterator[TracedFleet]:
    home = workdir / "observability"
    feast_dir = home / "feast"
    apply_user_stats(feast_dir, redis_url)
    features_home = home / "features"
    write_offline_source(generate_dataset(seed=3, n_users=50, n_merchants=10, n_transactions=200), features_home / "data")
    started: dict[str, ServiceProcess] = {}
    triton = start_traced_triton(home / "triton", receiver)
    try:
        with pytest.MonkeyPatch.context() as env:
            for name, value in otel_env(receiver).items():
                env.setenv(name, value)
            admin_key = secrets.token_urlsafe(24)
            key_file = home / "admin.key"
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(admin_key)
            registry = start_service("registry", {"triton_grpc_url": triton.grpc_url, "redis_url": redis_url,
                                                  "bootstrap_admin_key_file": key_file}, home / "registry")
            started["registry"] = registry
            register(registry.url, admin_key, MODEL, {1: train_onnx(1), 2: train_onnx(2)}, stable=1, canary=2, canary_percent=50)
            base, _, _ = redis_url.rpartition("/")
            started.update(start_services({
                "gateway": ServiceSpec("gateway", {
                    "registry_url": registry.url, "triton_http_url": triton.http_url,
                    "redis_url": redis_url, "feast_dir": feast_dir, "policy_poll_s": 60,
                }, home / "gateway"),
                "monitor": ServiceSpec("monitor", {
                    "redis_url": redis_url, "block_ms": 200, "registry_url": registry.url,
                    "registry_api_key_file": key_file, "drift_interval_s": 0.5, "alert_interval_s": 0.5,
                }, home / "monitor"),
                "features": ServiceSpec("features", {"redis_url": f"{base}/{FEATURES_REDIS_DB}",
                                                     "registry_url": registry.url}, features_home),
            }))
            gateway, monitor, features = started["gateway"], started["monitor"], started["features"]
        yield TracedFleet(receiver, triton, registry, gateway, monitor, features, admin_key)
    finally:
        # stopped and waited for here: their last spans go to the receiver, which stops next
        stop_processes([service.process for service in started.values()] + [triton.process])


@pytest.fixture(scope="session")
def gateway_client(traced_fleet) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=traced_fleet.gateway.url, timeout=30) as client:
        yield client
