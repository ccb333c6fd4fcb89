"""Every ``MLFLEET_*`` variable the image, Compose and the Helm chart set is one a service reads: a renamed setting
or a typo would otherwise leave a deployment on a default that only works on a laptop (``.mlfleet`` on a read-only
root filesystem, ``127.0.0.1`` for a peer service)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from services.common.settings import FLEET_HOME_ENV
from services.features.settings import FeaturesSettings
from services.gateway.settings import GatewaySettings
from services.monitor.settings import MonitorSettings
from services.registry.settings import RegistrySettings
from tests.deploy.chart import PRODUCTION, by_kind, render

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"gateway": GatewaySettings, "registry": RegistrySettings, "features": FeaturesSettings,
            "monitor": MonitorSettings}
FLEET_WIDE = {FLEET_HOME_ENV}


def unread(names: set[str], service: str | None = None) -> set[str]:
    """The ``MLFLEET_*`` names no service reads; with ``service``, also those meant for another service."""
    wrong = set()
    for name in (n for n in names if n.startswith("MLFLEET_") and n not in FLEET_WIDE):
        owner, _, field = name.removeprefix("MLFLEET_").partition("_")
        settings = SETTINGS.get(owner.lower())
        if settings is None or field.lower() not in settings.model_fields or service not in (None, owner.lower()):
            wrong.add(name)
    return wrong


def test_the_image_sets_only_names_the_services_read():
    env_line = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("ENV "))
    names = set(re.findall(r"(\w+)=", env_line))
    assert FLEET_HOME_ENV in names
    assert unread(names) == set()


def test_compose_gives_each_service_only_its_own_settings():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in SETTINGS:
        assert unread(set(services[name]["environment"]), name) == set(), name


@pytest.mark.parametrize("values", [None, PRODUCTION], ids=["defaults", "gpu-hpa-ingress"])
def test_the_chart_gives_each_service_only_its_own_settings(values):
    manifests = render(values)
    shared = set(next(iter(by_kind(manifests, "ConfigMap").values()))["data"])
    assert FLEET_HOME_ENV in shared
    assert unread(shared) == set()
    for name, deployment in by_kind(manifests, "Deployment").items():
        service = name.removeprefix("fleet-mlfleet-")
        if service in SETTINGS:
            env = {item["name"] for item in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])}
            assert unread(env, service) == set(), name
