"""``/healthz`` (cheap, no dependency) and ``/readyz`` (503 until the dependencies a service cannot work without
answer; the others are reported, as ``degraded``, without taking the service out of its load balancer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.common.errors import PROBLEM_JSON

ReadinessCheck = Callable[[Request], Awaitable[dict[str, bool]]]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, bool]
    degraded: list[str] = Field(default_factory=list, description="Dependencies that do not answer but that the "
                                "service stays ready without: what needs them fails with a problem of its own.")


def health_router(readiness: ReadinessCheck, *, optional: frozenset[str] = frozenset()) -> APIRouter:
    """``optional`` names the checks that do not gate readiness."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz", operation_id="health-live", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    @router.get(
        "/readyz",
        operation_id="health-ready",
        response_model=Readiness,
        responses={503: {"description": "A dependency is not reachable", "content": {PROBLEM_JSON: {}}}},
    )
    async def readyz(request: Request):
        checks = await readiness(request)
        failing = [name for name, ok in checks.items() if not ok]
        if all(name in optional for name in failing):
            return Readiness(status="ready", checks=checks, degraded=failing)
        body = {
            "type": "https://mlfleet.dev/problems/not-ready",
            "title": "Not ready",
            "status": 503,
            "detail": "unreachable: " + ", ".join(failing),
            "checks": checks,
        }
        return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)

    return router
