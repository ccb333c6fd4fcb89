"""The dashboard in headless Chromium (Debian's package, driven by Playwright) shows live numbers.

A real registry holds ``fraud`` (for the traffic split and the reference profile), a real
monitor consumes traffic with errors, feedback and a drifted window; the page must render
the versions table with the API's numbers and charts whose series carry them. The
screenshot is kept under the test's tmp dir and copied to ``dashboard.png`` (:func:`tests.results.results_file`).
"""

from __future__ import annotations

import shutil

import httpx
from playwright.sync_api import sync_playwright

from mlfleet.runtime.processes import wait_until
from services.common.redis import PREDICTIONS_STREAM
from tests.monitor.browser import FLAGS, ensure_chromium
from tests.monitor.factories import make_event, publish
from tests.results import results_file

SCREENSHOT = results_file("dashboard.png")


def test_dashboard_charts_show_live_numbers(demo_registry, run_monitor, stream_client, tmp_path):
    chromium = ensure_chromium()
    model, version, demo = demo_registry.model, demo_registry.version, demo_registry.demo
    monitor = run_monitor(**demo_registry.monitor_settings(), drift_interval_s=0.2, drift_window_size=300)
    events = demo.events(demo.holdout.iloc[:1500], model=model, version=version)
    events += demo.events(demo.shifted.iloc[:600], model=model, version=version)
    errors = [make_event(model, version, status="error", error_code="timeout", latency_ms=30) for _ in range(12)]
    publish(stream_client, PREDICTIONS_STREAM, events + errors)
    client = httpx.Client(base_url=monitor.url, timeout=10)
    wait_until(lambda: client.get("/v1/stats").json()["events_processed"] == len(events) + len(errors), timeout_s=30,
               what="events counted")
    truth = demo.holdout["is_fraud"].to_numpy()
    labels = [{"request_id": e.request_id, "instance": i, "label": int(truth[10 * n + i])}
              for n, e in enumerate(events[:12]) for i in range(10)]
    feedback = client.post("/v1/feedback", json=labels, headers=demo_registry.deployer())
    assert feedback.json()["counts"] == {"accepted": 120}
    wait_until(lambda: client.get(f"/v1/models/{model}/drift", params={"history": 1}).json()["verdict"] == "rollback",
               timeout_s=30, what="drifted window judged")
    metrics = {v["version"]: v for v in client.get(f"/v1/models/{model}/metrics", params={"window_s": 300}).json()["versions"]}
    served = metrics[version]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(f"{monitor.url}/dashboard?refresh_s=1")
            page.wait_for_function(
                "() => window.mlfleetDashboard.refreshes >= 2 && "
                f"window.mlfleetDashboard.charts['{model}-drift-v{version}']", timeout=30_000)
            row = page.locator(f'section[data-model="{model}"] tr[data-version="{version}"]')
            cell = lambda field: row.locator(f'td[data-field="{field}"]').inner_text()  # noqa: E731
            assert cell("requests") == str(served["requests"])
            assert cell("error_rate") == f"{served['error_rate'] * 100:.1f} %"
            assert cell("labelled") == "120"
            assert cell("accuracy") == f"{served['quality']['accuracy'] * 100:.1f} %"
            assert cell("p99") == f"{served['latency_ms']['p99']:.1f}"
            assert cell("variant") == "stable 100 %"
            assert cell("drift").startswith("rollback")
            assert page.locator(f'section[data-model="{model}"] .traffic').inner_text() == f"traffic: stable v{version}"

            charts = page.evaluate("() => window.mlfleetDashboard.charts")
            rate = charts[f"{model}-rate"]
            assert rate["points"] >= 30 and rate["max"][f"v{version}"] > 0
            assert charts[f"{model}-errors"]["max"][f"v{version}"] > 0
            assert charts[f"{model}-accuracy"]["last"][f"v{version}"] == served["quality"]["accuracy"] * 100
            drift = charts[f"{model}-drift-v{version}"]
            assert drift["points"] >= 1 and drift["last"]["distance_from_home_km"] > 0.15
            assert page.locator("canvas").count() >= 5
            assert page.locator("#alerts tbody tr").count() >= 1

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    shutil.copyfile(shot, SCREENSHOT)
    client.close()
