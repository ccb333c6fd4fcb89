"""Run the ``mlfleet`` command itself on free ports with its own home."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from mlfleet.runtime.processes import free_port

PORT_FIELDS = ("gateway", "registry", "features", "monitor", "triton_http", "triton_grpc", "triton_metrics")


@pytest.fixture
def fleet_env(tmp_path) -> dict[str, str]:
    """Environment for an isolated fleet: free ports, a fresh home and a Redis URL nobody answers."""
    env = dict(os.environ)
    for name in PORT_FIELDS:
        env[f"MLFLEET_{name.upper()}_PORT"] = str(free_port())
    env["MLFLEET_HOME"] = str(tmp_path / "home")
    env["MLFLEET_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def mlfleet_command() -> list[str]:
    return [str(Path(sys.executable).parent / "mlfleet")]
