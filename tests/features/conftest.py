"""Fixtures of the features tests: a demo data set, its offline files, a real features service, and a real registry
that checks the keys of callers that write the online store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlfleet.demo.data import FraudDataset, generate_dataset, write_offline_source
from tests.conftest import ServiceProcess, start_service, stop_at_session_end, write_key_file

FEATURES_REDIS_DB = 6
"""The features tests keep their online store in a Redis database of their own."""


@pytest.fixture(scope="session")
def features_redis_url(redis_url) -> str:
    base, _, _ = redis_url.rpartition("/")
    return f"{base}/{FEATURES_REDIS_DB}"


@pytest.fixture(scope="session")
def fraud_dataset() -> FraudDataset:
    """A small demo data set dated relative to now, so incremental materialization covers it."""
    return generate_dataset(seed=7, n_users=500, n_merchants=80, n_transactions=2_000)


@pytest.fixture(scope="session")
def features_home(workdir, fraud_dataset) -> Path:
    home = workdir / "features"
    write_offline_source(fraud_dataset, home / "data")
    return home


@pytest.fixture(scope="session")
def features_registry(workdir, triton, redis_url, admin_key) -> Iterator[ServiceProcess]:
    """A registry whose bootstrap admin key is ``admin_key``: the features service asks it about writers' keys."""
    home = workdir / "features-registry"
    key_file = write_key_file(home / "admin.key", admin_key)
    registry = start_service("registry", {"triton_grpc_url": triton.grpc_url, "redis_url": redis_url,
                                          "bootstrap_admin_key_file": key_file}, home)
    yield registry
    stop_at_session_end([registry.process])


@pytest.fixture(scope="session")
def features_service(features_home, features_redis_url, features_registry) -> Iterator[ServiceProcess]:
    """The features service as its own process, its offline source already written."""
    service = start_service("features", {"redis_url": features_redis_url, "registry_url": features_registry.url},
                            features_home)
    yield service
    stop_at_session_end([service.process])


@pytest.fixture(scope="session")
def features_client(features_service, admin_key) -> Iterator[httpx.Client]:
    """A client of the features service that sends the admin key (pushing and materializing need a deployer's)."""
    with httpx.Client(base_url=features_service.url, timeout=60,
                      headers={"Authorization": f"Bearer {admin_key}"}) as client:
        yield client


@pytest.fixture(scope="session")
def materialized(features_client) -> dict:
    """The answer to the first (incremental) materialization."""
    response = features_client.post("/v1/materialize", json={})
    assert response.status_code == 200, response.text
    return response.json()
