"""Integration fixtures: real Feast data in the suite's Redis, a real registry process that loads
two versions into the real Triton, and the gateway as a real process in front of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import redis
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64
from sklearn.linear_model import LogisticRegression
from skl2onnx import to_onnx

from mlfleet.runtime.processes import free_port
from services.common.feature_store import open_feature_store
from services.common.redis import PREDICTIONS_STREAM
from services.common.schemas import Signature
from tests.conftest import ServiceProcess, start_service, stop_at_session_end, write_key_file
from tests.gateway.factories import signature

MODEL = "gw-fraud"
DEFAULT_POLICY = {"stable": 1, "canary": 2, "canary_percent": 50}
USERS = range(1, 41)
"""Users with online features; any other user id has none."""


@dataclass(frozen=True)
class Fleet:
    registry: ServiceProcess
    gateway: ServiceProcess
    feast_dir: Path
    gateway_settings: dict[str, object]
    """What the gateway was started with; other gateways start from it."""
    artifacts: dict[int, bytes]
    """ONNX bytes of each registered version."""
    admin_key: str
    """The registry's bootstrap admin key (may pin versions at the gateway)."""


def apply_user_stats(feast_dir: Path, redis_url: str) -> None:
    """A minimal ``user_stats`` view (entity ``user_id``) written straight to the online store."""
    feast_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({
        "user_id": np.array(USERS, dtype=np.int64),
        "avg_amount_30d": rng.uniform(10, 500, len(USERS)),
        "txn_count_7d": rng.integers(0, 40, len(USERS)),
        "event_timestamp": [datetime.now(UTC) - timedelta(hours=1)] * len(USERS),
    })
    frame.to_parquet(feast_dir / "users.parquet")
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    source = FileSource(name="users", path=str(feast_dir / "users.parquet"), timestamp_field="event_timestamp")
    view = FeatureView(name="user_stats", entities=[user], ttl=timedelta(days=30), source=source, online=True,
                       schema=[Field(name="user_id", dtype=Int64), Field(name="avg_amount_30d", dtype=Float64),
                               Field(name="txn_count_7d", dtype=Int64)])
    store = open_feature_store(redis_url=redis_url, feast_dir=feast_dir)
    store.apply([user, source, view])
    store.write_to_online_store("user_stats", frame)


def train_onnx(seed: int) -> bytes:
    """A logistic regression over [amount, avg_amount_30d, txn_count_7d]; each seed learns a different model."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.uniform(0, 1000, 500), rng.uniform(10, 500, 500), rng.integers(0, 40, 500)]).astype(np.float32)
    y = (x[:, 0] / x[:, 1] + rng.normal(0, 1 + seed, 500) > 2).astype(int)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    return to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17).SerializeToString()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def events_of(redis_url: str, request_id: str) -> list[dict]:
    """The prediction events of ``request_id`` among the stream's newest 500."""
    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.xrevrange(PREDICTIONS_STREAM, count=500)
    finally:
        client.close()
    return [e for e in (json.loads(fields[b"event"]) for _, fields in entries) if e["request_id"] == request_id]


def register(registry_url: str, model: str, artifacts: dict[int, bytes], *, key: str,
             faults: dict[int, dict] | None = None, signatures: dict[int, Signature] | None = None,
             **policy) -> None:
    """Register ``model`` and its versions through the registry's API under ``key``, then set its traffic
    (loads Triton) unless no ``policy`` is given. ``faults`` maps a version to its fault injection, ``signatures`` to
    its signature (else :func:`~tests.gateway.factories.signature`'s default)."""
    with httpx.Client(base_url=registry_url, timeout=120, headers=bearer(key)) as client:
        client.post("/v1/models", json={"name": model, "gates": {"min_auc": None, "min_accuracy": None}}).raise_for_status()
        for version, artifact in artifacts.items():
            metadata = {"signature": (signatures or {}).get(version, signature()).model_dump(mode="json"), "metrics": {"auc": 0.95, "accuracy": 0.9},
                        "reference_profile": {}, "lineage": {}, "fault_injection": (faults or {}).get(version, {})}
            response = client.post(f"/v1/models/{model}/versions", files={"artifact": ("model.onnx", artifact)},
                                   data={"metadata": json.dumps(metadata)})
            response.raise_for_status()
            assert response.json()["version"] == version
    if policy:
        set_traffic(registry_url, model, key=key, **policy)


def set_traffic(registry_url: str, model: str, *, key: str, **policy) -> dict:
    response = httpx.put(f"{registry_url}/v1/models/{model}/traffic", json=policy, headers=bearer(key), timeout=120)
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="session")
def fleet(workdir, redis_url, triton, admin_key) -> Iterator[Fleet]:
    home = workdir / "gateway-it"
    feast_dir = home / "feast"
    apply_user_stats(feast_dir, redis_url)
    key_file = write_key_file(home / "secrets" / "admin.key", admin_key)
    registry = start_service("registry", {"triton_grpc_url": triton.grpc_url, "redis_url": redis_url,
                                          "bootstrap_admin_key_file": key_file}, home / "registry")
    gateway = None
    try:
        artifacts = {1: train_onnx(1), 2: train_onnx(2)}
        register(registry.url, MODEL, artifacts, key=admin_key, **DEFAULT_POLICY)
        settings = {
            "registry_url": registry.url, "triton_http_url": triton.http_url,
            "redis_url": redis_url, "feast_dir": feast_dir, "max_body_bytes": 16_384, "policy_poll_s": 60,
        }
        gateway = start_service("gateway", settings, home / "gateway")
        yield Fleet(registry, gateway, feast_dir, settings, artifacts, admin_key)
    finally:
        stop_at_session_end(service and service.process for service in (gateway, registry))


@pytest.fixture(scope="module")
def cut_off_gateway(fleet, workdir) -> Iterator[ServiceProcess]:
    """A gateway whose Triton is unreachable (nothing listens there) and whose ``max_instances`` is 2."""
    dead = f"127.0.0.1:{free_port()}"
    settings = fleet.gateway_settings | {"triton_http_url": dead, "max_instances": 2,
                                         "inference_timeout_s": 1}
    gateway = start_service("gateway", settings, workdir / "gateway-it" / "cut-off", ready_path="/healthz")
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def gateway_client(fleet) -> Iterator[httpx.Client]:
    """A client of the gateway that sends the admin key, so it may pin versions."""
    with httpx.Client(base_url=fleet.gateway.url, timeout=30, headers=bearer(fleet.admin_key)) as client:
        yield client
