"""``/readyz``: required checks gate readiness, optional ones are reported as degraded."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.common.errors import PROBLEM_JSON
from services.common.health import health_router


def client_of(checks: dict[str, bool]) -> TestClient:
    async def readiness(_request) -> dict[str, bool]:
        return checks

    app = FastAPI()
    app.include_router(health_router(readiness, optional=frozenset({"triton"})))
    return TestClient(app)


def test_all_checks_passing_is_ready_and_not_degraded():
    answer = client_of({"database": True, "triton": True}).get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ready", "checks": {"database": True, "triton": True}, "degraded": []}


def test_an_optional_check_failing_is_ready_but_degraded():
    answer = client_of({"database": True, "triton": False}).get("/readyz")
    assert answer.status_code == 200
    assert answer.json()["degraded"] == ["triton"]


@pytest.mark.parametrize("triton", [True, False])
def test_a_required_check_failing_is_a_503_problem_naming_what_fails(triton):
    answer = client_of({"database": False, "triton": triton}).get("/readyz")
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    expected = "unreachable: database" if triton else "unreachable: database, triton"
    assert answer.json()["detail"] == expected
