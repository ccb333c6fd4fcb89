"""What the local fleet sets for its services beyond their own defaults."""

from __future__ import annotations

from pathlib import Path

from mlfleet.fleet import LOCAL_GATEWAY_BUSY_POLL_US, Fleet, FleetConfig
from services.gateway.settings import GatewaySettings


def gateway_settings(env: dict[str, str]) -> GatewaySettings:
    return GatewaySettings(**{key.removeprefix("MLFLEET_GATEWAY_").lower(): value for key, value in env.items()
                              if key.startswith("MLFLEET_GATEWAY_")})


def test_the_local_gateway_busy_polls_where_a_deployed_one_does_not(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLEET_GATEWAY_BUSY_POLL_US", raising=False)
    fleet = Fleet(FleetConfig(home=tmp_path))
    assert gateway_settings(fleet.service_env("gateway")).busy_poll_us == LOCAL_GATEWAY_BUSY_POLL_US > 0
    assert GatewaySettings().busy_poll_us == 0, "off by default: a deployment's gateway may run under CPU limits"
    assert "MLFLEET_GATEWAY_BUSY_POLL_US" not in fleet.service_env("registry")


def test_the_environment_overrides_the_local_fleets_busy_polling(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLEET_GATEWAY_BUSY_POLL_US", "0")
    fleet = Fleet(FleetConfig(home=Path(tmp_path)))
    assert gateway_settings(fleet.service_env("gateway")).busy_poll_us == 0
