"""Every metric documented in docs/metrics.md is exported, with its documented labels, after traffic."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.conftest import USERS
from tests.observability.conftest import MODEL

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(?P<name>[a-z_:]+)` \| (?P<type>\w+) \| (?P<labels>[a-z_, ]*) \|")
SUFFIX_LABELS = {"le", "quantile"}
RARE = {"mlfleet_gateway_fallbacks", "mlfleet_gateway_shadow_skipped", "mlfleet_gateway_events_dropped",
        "mlfleet_features_materialized_rows", "nv_inference_request_failure"}
"""Exported without samples until their event happens (a failing canary, a full queue, …)."""


def documented() -> dict[str, dict[str, tuple[str, frozenset[str]]]]:
    """Section (service) → family name → (type, labels), from the tables above the 'Planned' section."""
    sections: dict[str, dict[str, tuple[str, frozenset[str]]]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].split()[0]
            if current == "Planned":
                break
            sections[current] = {}
        elif current and (row := ROW.match(line)):
            name = row["name"].removesuffix("_total") if row["type"] == "counter" else row["name"]
            labels = frozenset(label.strip() for label in row["labels"].split(",") if label.strip())
            sections[current][name] = (row["type"], labels)
    return sections


def scrape(url: str) -> dict[str, tuple[str, list[frozenset[str]]]]:
    text = httpx.get(url, timeout=10).text
    return {family.name: (family.type, [frozenset(s.labels) - SUFFIX_LABELS for s in family.samples])
            for family in text_string_to_metric_families(text)}


@pytest.fixture(scope="module")
def traffic(traced_fleet, gateway_client) -> None:
    for user in USERS[:6]:
        response = gateway_client.post(f"/v1/models/{MODEL}/predict", json={"instances": [{"user_id": user, "amount": 99.0}]})
        assert response.status_code == 200, response.text
    with httpx.Client(base_url=traced_fleet.features.url, timeout=30) as features:
        online = features.post("/v1/features/online", json={"features": ["user_stats:avg_amount_30d"],
                                                             "entities": {"user_id": [1, 2]}})
        assert online.status_code == 200, online.text
        row = {"user_id": 1, "avg_amount_30d": 42.0, "txn_count_7d": 3, "account_age_days": 400, "chargeback_rate": 0.0}
        pushed = features.post("/v1/push/user_stats_push", json={"rows": [row]})
        assert pushed.status_code == 200, pushed.text


def test_the_doc_lists_every_service():
    assert set(documented()) == {"gateway", "registry", "monitor", "features", "http", "triton"}


@pytest.mark.parametrize("service", ["gateway", "registry", "monitor", "features"])
def test_service_exports_its_documented_metrics(traffic, traced_fleet, service):
    docs = documented()
    url = f"{traced_fleet.services()[service].url}/metrics"
    if service == "monitor":
        assert traced_fleet.receiver.wait_for(lambda: bool(scrape(url)["mlfleet_monitor_events_processed"][1]),
                                              timeout_s=15), "the monitor counted no event"
    exported = scrape(url)
    check(docs[service] | docs["http"], exported, service)


def test_triton_exports_its_documented_metrics(traffic, traced_fleet):
    exported = scrape(f"http://127.0.0.1:{traced_fleet.triton.metrics_port}/metrics")
    check(documented()["triton"], exported, "triton")


def check(expected: dict[str, tuple[str, frozenset[str]]], exported: dict, where: str) -> None:
    missing = sorted(set(expected) - set(exported))
    assert not missing, f"{where} does not export {missing}"
    for name, (kind, labels) in expected.items():
        exported_kind, label_sets = exported[name]
        assert exported_kind == kind, f"{where}: {name} is a {exported_kind}, documented as a {kind}"
        if name in RARE and not label_sets:
            continue
        assert label_sets, f"{where}: {name} has no sample after traffic"
        assert set(label_sets) == {labels}, f"{where}: {name} has labels {set(label_sets)}, documented {labels}"
