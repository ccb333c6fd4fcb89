"""A whole fleet (Triton, registry, features, monitor, gateway) serving the demo model, on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlfleet.demo.run import run_demo
from mlfleet.fleet import Fleet, FleetConfig
from mlfleet.runtime.processes import free_port

PORTS = ("gateway", "registry", "features", "monitor", "triton_http", "triton_grpc", "triton_metrics")


@pytest.fixture(scope="module")
def demo_fleet(tmp_path_factory, redis_url) -> Iterator[Fleet]:
    """The demo's fleet: stable v1, a 10 % canary v2, features materialized, some traffic sent."""
    config = FleetConfig(home=tmp_path_factory.mktemp("reliability"), redis_url=redis_url.rsplit("/", 1)[0] + "/9",
                         **{f"{name}_port": free_port() for name in PORTS})
    with Fleet(config, echo=lambda message: None) as fleet:
        summary = run_demo(config, seed=7, shift=False, requests=100, canary_percent=10.0, echo=lambda message: None)
        assert summary.errors == 0
        yield fleet
