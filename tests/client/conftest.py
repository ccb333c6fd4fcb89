"""A whole fleet of real processes for the client and CLI tests: features, registry, monitor and
gateway on the suite's Redis (a database of their own) and its Triton, with the demo data set
materialized, plus the fraud model registered through the client itself."""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner, Result

from mlfleet.cli import app
from mlfleet.client import ClientConfig, Fleet
from mlfleet.runtime.processes import free_port
from mlfleet.demo.data import generate_dataset, label_column, model_frame, request_columns, write_offline_source
from tests.conftest import ServiceProcess, start_service, stop_services, write_key_file

CLIENT_REDIS_DB = 10
"""The client tests' fleet keeps its events, policies and online features in a database of its own."""

MODEL = "cl-fraud"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class ClientFleet:
    features: ServiceProcess
    registry: ServiceProcess
    monitor: ServiceProcess
    gateway: ServiceProcess
    admin_key: str

    @property
    def services(self) -> dict[str, ServiceProcess]:
        return {"features": self.features, "registry": self.registry, "monitor": self.monitor, "gateway": self.gateway}

    def config(self, api_key: str | None = None) -> ClientConfig:
        return ClientConfig(registry_url=self.registry.url, gateway_url=self.gateway.url, monitor_url=self.monitor.url,
                            features_url=self.features.url, api_key=api_key or self.admin_key, retries=1)

    def env(self, api_key: str | None = None) -> dict[str, str]:
        """Environment pointing the CLI and the client at this fleet (and at no config file)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLEET_")}
        env.update({f"MLFLEET_{name.upper()}_URL": service.url for name, service in self.services.items()})
        env["MLFLEET_API_KEY"] = api_key or self.admin_key
        env["MLFLEET_CONFIG"] = "/nonexistent/mlfleet.toml"
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        return env


@pytest.fixture(scope="session")
def client_fleet(workdir, redis_url, triton) -> Iterator[ClientFleet]:
    home = workdir / "client-fleet"
    redis = urlparse(redis_url)._replace(path=f"/{CLIENT_REDIS_DB}").geturl()
    dataset = generate_dataset(seed=11, n_users=300, n_merchants=60, n_transactions=3_000)
    write_offline_source(dataset, home / "features" / "data")
    admin_key = "mlf_" + secrets.token_urlsafe(32)
    admin_key_file = write_key_file(home / "secrets" / "admin.key", admin_key)
    registry_port, monitor_port = free_port(), free_port()
    with ThreadPoolExecutor(3) as pool:
        starting = {
            "features": pool.submit(start_service, "features", {
                "redis_url": redis, "registry_url": f"http://127.0.0.1:{registry_port}"}, home / "features"),
            "registry": pool.submit(start_service, "registry", {
                "triton_grpc_url": triton.grpc_url, "redis_url": redis, "bootstrap_admin_key_file": admin_key_file,
                "monitor_url": f"http://127.0.0.1:{monitor_port}", "rollout_tick_s": 0.2}, home / "registry",
                port=registry_port),
            # The monitor reads reference profiles (drift) and checks feedback callers' keys at the registry.
            "monitor": pool.submit(start_service, "monitor", {
                "redis_url": redis, "block_ms": 200, "registry_url": f"http://127.0.0.1:{registry_port}",
                "registry_api_key_file": admin_key_file, "samples_per_s": 0}, home / "monitor", port=monitor_port),
        }
        started = {name: future.result() for name, future in starting.items()}
    gateway = None
    try:
        httpx.post(f"{started['features'].url}/v1/materialize", json={}, timeout=120,
                   headers={"Authorization": f"Bearer {admin_key}"}).raise_for_status()
        gateway = start_service("gateway", {
            "registry_url": started["registry"].url, "triton_grpc_url": triton.grpc_url,
            "triton_http_url": triton.http_url, "redis_url": redis, "feast_dir": home / "features" / "feast",
            "policy_poll_s": 0.5}, home / "gateway")
        yield ClientFleet(admin_key=admin_key, gateway=gateway, **started)
    finally:
        stop_services([gateway, *started.values()])


@pytest.fixture(scope="session")
def fleet_client(client_fleet) -> Iterator[Fleet]:
    with Fleet(config=client_fleet.config()) as fleet:
        yield fleet


@dataclass(frozen=True)
class TrainingData:
    x_train: pd.DataFrame
    y_train: pd.Series
    x_test: pd.DataFrame
    y_test: pd.Series


@pytest.fixture(scope="session")
def fraud_frame() -> pd.DataFrame:
    """The demo's model frame of the fleet's data set: keys, request fields, feature fields, label."""
    return model_frame(generate_dataset(seed=11, n_users=300, n_merchants=60, n_transactions=3_000))


@pytest.fixture(scope="session")
def training_data(fraud_frame) -> TrainingData:
    """Model inputs named as the request and the feature views name them, split for a holdout."""
    frame = fraud_frame
    inputs = [c for c in frame.columns if c not in ("user_id", "merchant_id", label_column)]
    x_train, x_test, y_train, y_test = train_test_split(frame[inputs], frame[label_column], test_size=0.3,
                                                        random_state=0, stratify=frame[label_column])
    return TrainingData(x_train, y_train, x_test, y_test)


@pytest.fixture(scope="session")
def fraud_estimator(training_data) -> Pipeline:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return model.fit(training_data.x_train, training_data.y_train)


@pytest.fixture(scope="session")
def registered(fleet_client, training_data, fraud_estimator):
    """Version 1 of :data:`MODEL`, registered in one call from the estimator and its DataFrame, serving as stable."""
    version = fleet_client.register(MODEL, fraud_estimator, training_data.x_train, labels=training_data.y_train,
                                    holdout=(training_data.x_test, training_data.y_test))
    fleet_client.set_traffic(MODEL, stable=version.version, wait=True)
    return version


@pytest.fixture(scope="session")
def instances(fraud_frame) -> list[dict]:
    """Prediction requests' fields (keys and request fields) of users and merchants with online features."""
    return [{"user_id": int(r.user_id), "merchant_id": int(r.merchant_id), **{c: float(getattr(r, c)) for c in request_columns}}
            for r in fraud_frame.head(50).itertuples(index=False)]


@pytest.fixture(scope="session")
def cli(client_fleet):
    """Run ``mlfleet …`` in-process (the commands still talk HTTP to the fleet's processes), by default
    with the admin key; ``expect`` is the exit code the command must end with."""
    runner = CliRunner()

    def run(*args: str, expect: int = 0, env: dict | None = None) -> Result:
        result = runner.invoke(app, list(args), env=(env or client_fleet.env()) | {"COLUMNS": "200"})
        assert result.exit_code == expect, f"exit {result.exit_code}: {result.stdout}\n{result.stderr}"
        return result

    return run


@pytest.fixture(scope="session")
def api(client_fleet):
    """GET a service's answer directly (with the admin key), as the CLI's JSON must reproduce it."""

    def get(service: str, path: str, **params):
        response = httpx.get(f"{client_fleet.services[service].url}{path}", params=params, timeout=10,
                             headers={"Authorization": f"Bearer {client_fleet.admin_key}"})
        response.raise_for_status()
        return response.json()

    return get


def as_json(result: Result) -> object:
    return json.loads(result.stdout)


@dataclass(frozen=True)
class CliArtifacts:
    """What ``mlfleet register`` takes: an ONNX file, its signature (YAML) and labelled data (Parquet)."""

    onnx: Path
    signature: Path
    data: Path
    label_column: str = "is_fraud"

    def register_args(self, *extra: str) -> list[str]:
        return ["register", str(self.onnx), "--model", MODEL, "--signature", str(self.signature),
                "--profile", str(self.data), "--labels", self.label_column, *extra]


@pytest.fixture(scope="session")
def cli_artifacts(tmp_path_factory, registered, fraud_estimator, training_data) -> CliArtifacts:
    """The registered estimator as files, ready for ``mlfleet register``."""
    from mlfleet.client.packaging import estimator_to_onnx

    folder = tmp_path_factory.mktemp("cli-artifacts")
    columns = registered.signature.input_names
    artifacts = CliArtifacts(folder / "model.onnx", folder / "signature.yaml", folder / "data.parquet")
    artifacts.onnx.write_bytes(estimator_to_onnx(fraud_estimator, training_data.x_train[columns].to_numpy("float32")))
    artifacts.signature.write_text(yaml.safe_dump(registered.signature.model_dump(mode="json", exclude_none=True)))
    training_data.x_test.assign(**{artifacts.label_column: training_data.y_test.to_numpy()}).to_parquet(artifacts.data)
    return artifacts


@contextmanager
def sending_traffic(fleet_client: Fleet, instances: list[dict]) -> Iterator[None]:
    """Predictions of :data:`MODEL` sent one after another from a thread, each with its own routing key, while
    the block runs (a rollout needs live traffic to be judged)."""
    stop = threading.Event()

    def send() -> None:
        i = 0
        while not stop.is_set():
            fleet_client.predict(MODEL, instances[i % len(instances)], routing_key=f"user-{i}")
            i += 1

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield
    finally:
        stop.set()
        sender.join()
