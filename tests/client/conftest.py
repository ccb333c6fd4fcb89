"""A whole fleet of real processes for the client and CLI tests: features, registry, monitor and
gateway on the suite's Redis (a database of their own) and its Triton, with the demo data set
materialized, plus the fraud model registered through the client itself."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from mlfleet.client import ClientConfig, Fleet
from mlfleet.runtime.processes import free_port
from mlfleet.demo.data import generate_dataset, label_column, model_frame, request_columns, write_offline_source
from tests.conftest import ServiceProcess, start_service

CLIENT_REDIS_DB = 7
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
    monitor_port = free_port()
    with ThreadPoolExecutor(3) as pool:
        starting = {
            "features": pool.submit(start_service, "features", {"redis_url": redis}, home / "features"),
            "registry": pool.submit(start_service, "registry", {
                "triton_grpc_url": triton.grpc_url, "redis_url": redis, "bootstrap_admin_key": admin_key,
                "monitor_url": f"http://127.0.0.1:{monitor_port}", "rollout_tick_s": 0.2}, home / "registry"),
            "monitor": pool.submit(start_service, "monitor", {"redis_url": redis, "block_ms": 200}, home / "monitor",
                                   port=monitor_port),
        }
        started = {name: future.result() for name, future in starting.items()}
    gateway = None
    try:
        httpx.post(f"{started['features'].url}/v1/materialize", json={}, timeout=120).raise_for_status()
        gateway = start_service("gateway", {
            "registry_url": started["registry"].url, "triton_grpc_url": triton.grpc_url,
            "triton_http_url": triton.http_url, "redis_url": redis, "feast_dir": home / "features" / "feast",
            "policy_poll_s": 0.5}, home / "gateway")
        yield ClientFleet(admin_key=admin_key, gateway=gateway, **started)
    finally:
        for service in [gateway, *started.values()]:
            if service is not None:
                service.stop()


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
