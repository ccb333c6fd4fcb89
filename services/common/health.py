"""``/healthz`` (cheap, no dependency) and ``/readyz`` (503 until dependencies answer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.common.errors import PROBLEM_JSON

ReadinessCheck = Callable[[Request], Awaitable[dict[str, bool]]]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, bool]


def health_router(readiness: ReadinessCheck) -> APIRouter:
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
        if all(checks.values()):
            return Readiness(status="ready", checks=checks)
        body = {
            "type": "https://mlfleet.dev/problems/not-ready",
            "title": "Not ready",
            "status": 503,
            "detail": "unreachable: " + ", ".join(k for k, ok in checks.items() if not ok),
            "checks": checks,
        }
        return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)

    return router
