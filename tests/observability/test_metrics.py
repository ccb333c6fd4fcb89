"""Every metric documented in docs/metrics.md is exported, with its documented labels, after traffic."""

from __future__ import annotations

from collections.abc import Collection

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlfleet.runtime.processes import wait_until
from tests.gateway.conftest import USERS
from tests.observability.conftest import MODEL
from tests.observability.metrics_doc import documented

SUFFIX_LABELS = {"le", "quantile"}
RARE = {"mlfleet_gateway_fallbacks", "mlfleet_gateway_shed", "mlfleet_gateway_shadow_skipped", "mlfleet_gateway_events_dropped",
        "mlfleet_features_materialized_rows", "nv_inference_request_failure", "mlfleet_monitor_alerts", "mlfleet_monitor_samples_skipped",
        "mlfleet_monitor_alert_deliveries", "mlfleet_registry_webhook_deliveries"}
"""Exported without samples until their event happens (a failing canary, a full queue, an alert, a live stream over
its sampling rate, an overloaded version: tests/monitor/test_samples.py, tests/gateway/test_errors_integration.py, …)."""
ROLLOUT_ONLY = {"mlfleet_registry_rollout_verdicts", "mlfleet_registry_rollout_events",
                "mlfleet_registry_rollout_step_percent", "mlfleet_registry_rollbacks"}
"""Sampled once a rollout runs: tests/registry/test_rollout_metrics.py checks them on a registry that ran one."""
NEEDS_REFERENCE = {"mlfleet_monitor_drift"}
"""Sampled once a version with a reference profile fills a drift window: tests/monitor/test_drift_service.py."""


def scrape(url: str) -> dict[str, tuple[str, list[frozenset[str]]]]:
    text = httpx.get(url, timeout=10).text
    return {family.name: (family.type, [frozenset(s.labels) - SUFFIX_LABELS for s in family.samples])
            for family in text_string_to_metric_families(text)}


@pytest.fixture(scope="module")
def traffic(traced_fleet, gateway_client) -> None:
    request_ids = []
    for user in USERS[:6]:
        response = gateway_client.post(f"/v1/models/{MODEL}/predict", json={"instances": [{"user_id": user, "amount": 99.0}]})
        assert response.status_code == 200, response.text
        request_ids.append(response.json()["request_id"])
    give_feedback(traced_fleet.monitor.url, traced_fleet.admin_key, request_ids)
    with httpx.Client(base_url=traced_fleet.features.url, timeout=30,
                      headers={"Authorization": f"Bearer {traced_fleet.admin_key}"}) as features:
        online = features.post("/v1/features/online", json={"features": ["user_stats:avg_amount_30d"],
                                                             "entities": {"user_id": [1, 2]}})
        assert online.status_code == 200, online.text
        row = {"user_id": 1, "avg_amount_30d": 42.0, "txn_count_7d": 3, "account_age_days": 400, "chargeback_rate": 0.0}
        pushed = features.post("/v1/push/user_stats_push", json={"rows": [row]})
        assert pushed.status_code == 200, pushed.text


def give_feedback(monitor_url: str, key: str, request_ids: list[str]) -> None:
    """Label the predictions once the monitor has logged them (feedback for an unseen request is `unknown`)."""
    with httpx.Client(base_url=monitor_url, timeout=10, headers={"Authorization": f"Bearer {key}"}) as monitor:
        def labelled() -> bool:
            response = monitor.post("/v1/feedback", json=[{"request_id": r, "label": 1} for r in request_ids])
            assert response.status_code == 200, response.text
            return "unknown" not in response.json()["counts"]
        wait_until(labelled, timeout_s=15, what="the monitor logging the predictions")


def test_the_doc_lists_every_service():
    assert set(documented()) == {"gateway", "registry", "monitor", "features", "http", "triton"}


@pytest.mark.parametrize("service", ["gateway", "registry", "monitor", "features"])
def test_service_exports_its_documented_metrics(traffic, traced_fleet, service):
    docs = documented()
    url = f"{traced_fleet.services()[service].url}/metrics"
    if service == "monitor":
        watched = ("mlfleet_monitor_events_processed", "mlfleet_monitor_drift_verdict", "mlfleet_monitor_live_accuracy")
        wait_until(lambda: all(scrape(url)[name][1] for name in watched), timeout_s=15,
                   what="the monitor's counts, drift pass and live accuracy")
    exported = scrape(url)
    check(docs[service] | docs["http"], exported, service, unsampled=RARE | ROLLOUT_ONLY | NEEDS_REFERENCE)


def test_triton_exports_its_documented_metrics(traffic, traced_fleet):
    exported = scrape(f"http://127.0.0.1:{traced_fleet.triton.metrics_port}/metrics")
    check(documented()["triton"], exported, "triton", unsampled=RARE)


def check(expected: dict[str, tuple[str, frozenset[str]]], exported: dict, where: str, *,
          unsampled: Collection[str] = ()) -> None:
    """Every expected family is exported with its type; with its labels unless it is ``unsampled`` and has no sample."""
    missing = sorted(set(expected) - set(exported))
    assert not missing, f"{where} does not export {missing}"
    for name, (kind, labels) in expected.items():
        exported_kind, label_sets = exported[name]
        assert exported_kind == kind, f"{where}: {name} is a {exported_kind}, documented as a {kind}"
        if name in unsampled and not label_sets:
            continue
        assert label_sets, f"{where}: {name} has no sample after traffic"
        assert set(label_sets) == {labels}, f"{where}: {name} has labels {set(label_sets)}, documented {labels}"
