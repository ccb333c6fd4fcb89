"""Prometheus metrics on an app-owned registry (never the global one)."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.requests import Request
from starlette.responses import Response


def instrument(app: FastAPI, registry: CollectorRegistry) -> None:
    """HTTP metrics for every route plus ``GET /metrics`` serving ``registry``."""
    Instrumentator(registry=registry, excluded_handlers=["/metrics", "/healthz"]).instrument(app)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_route("/metrics", metrics, include_in_schema=False)
