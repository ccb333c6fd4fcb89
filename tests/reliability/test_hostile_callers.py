"""Bad input and hostile callers against the four services as real processes: limits, content types, security
headers, CORS and per-key rate limits. Every refusal is a 4xx problem+json without a stack trace."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from mlfleet.demo.data import generate_dataset, write_offline_source
from mlfleet.runtime.processes import wait_until
from services.registry.api import MAX_METADATA_BYTES
from tests.conftest import ServiceProcess, start_service, stop_services, write_key_file
from tests.gateway.conftest import MODEL, apply_user_stats, bearer, register, train_onnx

ORIGIN = "https://ops.example"
"""The one browser origin the registry of this module allows; the other services allow none."""
REDIS_DB = 12
BODY_LIMIT = 65_536
"""``max_body_bytes`` of every service here (the registry adds ``max_artifact_bytes`` and the metadata part's limit
for uploads)."""
ARTIFACT_LIMIT = 1_000_000
REGISTRY_LIMIT = ARTIFACT_LIMIT + MAX_METADATA_BYTES + BODY_LIMIT
HUGE = 10**30
STARTUP_TIMEOUT_S = 180
"""Three services start side by side on a shared machine: more time than one alone needs."""


@dataclass(frozen=True)
class Fleet:
    services: dict[str, ServiceProcess]
    admin_key: str

    def url(self, service: str) -> str:
        return self.services[service].url


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, redis_url, triton, admin_key) -> Iterator[Fleet]:
    """Registry (CORS for :data:`ORIGIN`), gateway, features and monitor, started once for the module."""
    home = tmp_path_factory.mktemp("hostile")
    redis = f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}"
    key_file = write_key_file(home / "secrets" / "admin.key", admin_key)
    services: dict[str, ServiceProcess] = {}
    try:
        services["registry"] = start_service("registry", {
            "triton_grpc_url": triton.grpc_url, "redis_url": redis, "bootstrap_admin_key_file": key_file,
            "cors_origins": json.dumps([ORIGIN]), "max_body_bytes": BODY_LIMIT, "max_artifact_bytes": ARTIFACT_LIMIT,
        }, home / "registry")
        register(services["registry"].url, MODEL, {1: train_onnx(1)}, key=admin_key, stable=1)
        apply_user_stats(home / "feast", redis)
        write_offline_source(generate_dataset(seed=3, n_users=20, n_merchants=5, n_transactions=100),
                             home / "features" / "data")
        registry_url = services["registry"].url
        settings = {
            "gateway": {"registry_url": registry_url,
                        "triton_http_url": triton.http_url, "redis_url": redis, "feast_dir": home / "feast",
                        "max_body_bytes": 16_384, "max_instances": 4, "policy_poll_s": 60},
            "features": {"redis_url": redis, "registry_url": registry_url, "max_body_bytes": BODY_LIMIT},
            "monitor": {"redis_url": redis, "registry_url": registry_url, "block_ms": 200,
                        "max_body_bytes": BODY_LIMIT},
        }
        with ThreadPoolExecutor(len(settings)) as pool:
            started = {name: pool.submit(start_service, name, values, home / name, timeout_s=STARTUP_TIMEOUT_S)
                       for name, values in settings.items()}
            for name, future in started.items():
                services[name] = future.result()
        warm_up(services["gateway"].url)
        yield Fleet(services, admin_key)
    finally:
        stop_services(services.values())


def warm_up(gateway_url: str) -> None:
    """One answered prediction, so the first feature lookup's cold start is behind the tests."""
    wait_until(lambda: httpx.post(f"{gateway_url}/v1/models/{MODEL}/predict", json={"instances": [INSTANCE]},
                                  timeout=30).status_code == 200, timeout_s=60, what="a first prediction")


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    assert "Traceback" not in response.text and 'File "' not in response.text
    body = response.json()
    assert body["status"] == status and body["title"] and body["code"]
    return body


def oversized_json(n: int) -> str:
    return json.dumps({"padding": "x" * n})


def chunks(n: int) -> list[bytes]:
    """A body of more than ``n`` bytes sent chunked (no Content-Length), so only the streamed count can refuse it."""
    return [b'{"padding": "', *[b"x" * 8192] * (n // 8192 + 1), b'"}']


AS_TEXT = {"headers": {"content-type": "text/plain"}}
FORM = {"data": {"name": "a"}}
INSTANCE = {"user_id": 1, "amount": 10.0}

# (service, method, path, request keyword arguments, expected status)
LIMITS = [
    ("registry", "POST", "/v1/models", {"json": {"name": "m" * 64}}, 422),
    ("registry", "POST", "/v1/models", {"json": {"name": "ok", "description": "d" * 4001}}, 422),
    ("registry", "POST", "/v1/keys", {"json": {"name": "k" * 129, "role": "viewer"}}, 422),
    ("registry", "POST", "/v1/keys", {"json": {"name": "k", "role": "viewer", "rate_limit_per_minute": HUGE}}, 422),
    ("registry", "POST", "/v1/keys", {"json": {"name": "k", "role": "viewer", "rate_limit_per_minute": 0}}, 422),
    ("registry", "GET", f"/v1/models/{MODEL}/versions/{HUGE}", {}, 422),
    ("registry", "GET", f"/v1/models/{MODEL}/rollouts/{HUGE}", {}, 422),
    ("registry", "DELETE", f"/v1/keys/{HUGE}", {}, 422),
    ("registry", "PUT", f"/v1/models/{MODEL}/traffic", {"json": {"stable": 2**63}}, 422),
    ("registry", "POST", f"/v1/models/{MODEL}/rollouts", {"json": {"candidate": 1, "min_requests": 2**40}}, 422),
    ("registry", "POST", f"/v1/models/{MODEL}/rollback", {"json": {"reason": "r" * 1001}}, 422),
    ("registry", "POST", "/v1/models", {"content": '{"name": "ok"}', **AS_TEXT}, 415),
    ("registry", "POST", "/v1/models", FORM, 415),
    ("registry", "POST", f"/v1/models/{MODEL}/versions", {"json": {"metadata": "{}"}}, 415),
    ("registry", "POST", "/v1/keys", {"content": oversized_json(REGISTRY_LIMIT)}, 413),
    ("registry", "POST", "/v1/keys", {"content": chunks(REGISTRY_LIMIT)}, 413),
    ("gateway", "POST", f"/v1/models/{MODEL}/predict", {"content": json.dumps({"instances": [INSTANCE]}), **AS_TEXT}, 415),
    ("gateway", "POST", f"/v1/models/{MODEL}/predict", {"data": {"instances": "x"}}, 415),
    ("gateway", "POST", f"/v1/models/{MODEL}/predict", {"json": {"instances": [INSTANCE] * 5}}, 422),
    ("gateway", "POST", f"/v1/models/{MODEL}/predict", {"json": {"instances": [INSTANCE], "routing_key": "r" * 257}}, 422),
    ("gateway", "POST", f"/v1/models/{MODEL}/predict", {"json": {"instances": [{"user_id": 1, "amount": HUGE}]}}, 422),
    ("gateway", "POST", f"/v1/models/{MODEL}/predict", {"json": {"instances": [{"user_id": HUGE, "amount": 1}]}}, 422),
    ("gateway", "POST", f"/v1/models/{MODEL}/predict", {"json": {"instances": [{"user_id": 1, "amount": 1e300}]}}, 422),
    ("gateway", "POST", f"/v1/models/{MODEL}/predict", {"json": {"instances": [{"x": "y" * 20_000}]}}, 413),
    ("gateway", "GET", f"/v2/models/{MODEL}/versions/{HUGE}", {}, 404),
    ("features", "POST", "/v1/features/online",
     {"json": {"features": ["v:" + "f" * 300], "entities": {"user_id": [1]}}}, 422),
    ("features", "POST", "/v1/features/online",
     {"json": {"features": ["user_stats:avg_amount_30d"], "entities": {"user_id": [HUGE]}}}, 422),
    ("features", "POST", "/v1/features/online", {"content": '{"features": ["a:b"]}', **AS_TEXT}, 415),
    ("features", "POST", "/v1/push/user_stats_push", {"json": {"rows": [{}] * 10_001}}, 422),
    ("features", "POST", "/v1/push/user_stats_push", {"json": {"rows": [{"user_id": HUGE}]}}, 422),
    ("features", "POST", "/v1/push/user_stats_push", {"content": oversized_json(BODY_LIMIT)}, 413),
    ("monitor", "POST", "/v1/feedback", {"json": {"request_id": "r" * 129, "label": 1}}, 422),
    ("monitor", "POST", "/v1/feedback", {"json": {"request_id": "r", "label": 1, "instance": HUGE}}, 422),
    ("monitor", "POST", "/v1/feedback", {"content": '{"request_id": "r", "label": 1}', **AS_TEXT}, 415),
    ("monitor", "POST", "/v1/feedback", {"content": oversized_json(BODY_LIMIT)}, 413),
    ("monitor", "GET", f"/v1/models/{'m' * 64}/metrics", {}, 422),
    ("monitor", "GET", f"/v1/models/{MODEL}/drift", {"params": {"version": HUGE}}, 404),
]


@pytest.mark.parametrize(("service", "method", "path", "kwargs", "status"), LIMITS,
                         ids=[f"{s}-{m}-{p[:40]}-{st}" for s, m, p, _, st in LIMITS])
def test_limits_are_clear_problems(fleet, service, method, path, kwargs, status):
    kwargs = dict(kwargs)
    headers = {**bearer(fleet.admin_key), **kwargs.pop("headers", {})}
    response = httpx.request(method, fleet.url(service) + path, headers=headers, timeout=30, **kwargs)
    assert_problem(response, status)


API_SECURITY_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
                        "referrer-policy": "no-referrer", "cache-control": "no-store"}


@pytest.mark.parametrize(("service", "path"), [("registry", "/v1/routes"), ("gateway", "/v1/routes"),
                                               ("features", "/v1/features"), ("monitor", "/v1/models")])
def test_json_and_error_answers_carry_security_headers(fleet, service, path):
    for response, status in ((httpx.get(fleet.url(service) + path, timeout=10), 200),
                             (httpx.get(fleet.url(service) + "/v1/no-such-route", timeout=10), 404)):
        assert response.status_code == status, response.text
        for name, value in API_SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (name, response.headers)
        assert "server" not in response.headers, "no banner naming the server software"
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert_problem(response, 404)


def test_the_dashboard_and_api_docs_still_load(fleet):
    monitor = fleet.url("monitor")
    page = httpx.get(f"{monitor}/dashboard", timeout=10)
    assert page.status_code == 200 and "<script" in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "'none'" not in policy.split(";")[0]
    for asset in ("/static/dashboard.js", "/static/uPlot.iife.min.js", "/static/dashboard.css"):
        loaded = httpx.get(monitor + asset, timeout=10)
        assert loaded.status_code == 200 and loaded.headers["x-content-type-options"] == "nosniff", asset
    docs = httpx.get(f"{fleet.url('registry')}/docs", timeout=10)
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers
    assert docs.headers["x-frame-options"] == "DENY"


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(url, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                       "Access-Control-Request-Headers": "authorization,content-type"}, timeout=10)


def test_cors_answers_only_the_configured_origin(fleet):
    allowed = preflight(f"{fleet.url('registry')}/v1/models", ORIGIN)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    simple = httpx.get(f"{fleet.url('registry')}/v1/routes", headers={"Origin": ORIGIN}, timeout=10)
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    other = preflight(f"{fleet.url('registry')}/v1/models", "https://evil.example")
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    unconfigured = preflight(f"{fleet.url('gateway')}/v1/models/{MODEL}/predict", ORIGIN)
    assert "access-control-allow-origin" not in unconfigured.headers


def new_key(fleet: Fleet, name: str, role: str, rate_limit: int | None = None) -> str:
    body = {"name": name, "role": role} | ({"rate_limit_per_minute": rate_limit} if rate_limit else {})
    created = httpx.post(f"{fleet.url('registry')}/v1/keys", json=body, headers=bearer(fleet.admin_key), timeout=10)
    assert created.status_code == 201, created.text
    assert created.json()["rate_limit_per_minute"] == rate_limit
    return created.json()["key"]


def metric(url: str, name: str) -> float:
    lines = [line for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines() if line.startswith(name + " ")]
    return float(lines[0].split()[1])


def test_a_rate_limited_key_gets_429_with_retry_after_while_other_keys_go_on(fleet):
    limited, other = new_key(fleet, "throttled", "deployer", rate_limit=3), new_key(fleet, "free", "deployer")
    registry = fleet.url("registry")
    whoami = httpx.get(f"{registry}/v1/auth/whoami", headers=bearer(limited), timeout=10)
    assert whoami.json() == {"name": "throttled", "role": "deployer", "rate_limit_per_minute": 3}
    answers = [httpx.get(f"{registry}/v1/models", headers=bearer(limited), timeout=10) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    refused = assert_problem(answers[-1], 429)
    assert refused["code"] == "rate-limited" and limited not in answers[-1].text
    assert 1 <= int(answers[-1].headers["retry-after"]) <= 20 and refused["retry_after_s"] >= 1
    assert all(httpx.get(f"{registry}/v1/models", headers=bearer(other), timeout=10).status_code == 200
               for _ in range(5))
    assert metric(registry, "mlfleet_registry_rate_limited_total") >= 1
    listed = httpx.get(f"{registry}/v1/keys", headers=bearer(fleet.admin_key), timeout=10).json()["data"]
    assert {k["name"]: k["rate_limit_per_minute"] for k in listed}["throttled"] == 3

    gateway = fleet.url("gateway")

    def pinned(key: str) -> httpx.Response:
        return httpx.post(f"{gateway}/v1/models/{MODEL}/predict", json={"instances": [INSTANCE]},
                          headers={**bearer(key), "X-Mlfleet-Version": "1"}, timeout=30)

    answers = [pinned(limited) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429], answers[-1].text
    assert_problem(answers[-1], 429)
    assert int(answers[-1].headers["retry-after"]) >= 1
    assert pinned(other).status_code == 200
    assert metric(gateway, "mlfleet_gateway_rate_limited_total") == 1
