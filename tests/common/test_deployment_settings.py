"""Settings a deployment relies on: where each service keeps its state (its own ``MLFLEET_<SVC>_HOME``, else the
fleet's ``MLFLEET_HOME``, which the container image and the Helm chart set, else ``.mlfleet``), and the URLs its
links are made from."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.features.settings import FeaturesSettings
from services.gateway.settings import GatewaySettings
from services.monitor.settings import MonitorSettings
from services.registry.settings import RegistrySettings

SERVICES = {"gateway": GatewaySettings, "registry": RegistrySettings, "features": FeaturesSettings,
            "monitor": MonitorSettings}


@pytest.fixture(autouse=True)
def no_home_in_the_environment(monkeypatch):
    for name in ["MLFLEET_HOME", *(f"MLFLEET_{service.upper()}_HOME" for service in SERVICES)]:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("service", SERVICES)
def test_the_fleets_home_is_every_services_home(monkeypatch, service):
    monkeypatch.setenv("MLFLEET_HOME", "/var/lib/mlfleet")
    assert SERVICES[service]().home == Path("/var/lib/mlfleet")


@pytest.mark.parametrize("service", SERVICES)
def test_a_services_own_home_wins(monkeypatch, service):
    monkeypatch.setenv("MLFLEET_HOME", "/var/lib/mlfleet")
    monkeypatch.setenv(f"MLFLEET_{service.upper()}_HOME", "/srv/own")
    assert SERVICES[service]().home == Path("/srv/own")


def test_without_either_the_home_is_a_local_folder():
    assert GatewaySettings().home == Path(".mlfleet")


def test_public_urls_for_links_lose_a_trailing_slash():
    """Links are made as ``<url>/dashboard``: ``https://x/`` must not give ``https://x//dashboard``."""
    assert MonitorSettings(public_url="https://monitor.example.com/").monitor_url() == "https://monitor.example.com"
    assert RegistrySettings(public_url="https://registry.example.com/").registry_url() == "https://registry.example.com"
