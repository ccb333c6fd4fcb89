"""Helpers to run the registry app in process for tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from mlfleet.runtime.processes import free_port
from services.registry.app import create_app
from services.registry.settings import RegistrySettings


@contextlib.asynccontextmanager
async def running_registry(settings: RegistrySettings) -> AsyncIterator[httpx.AsyncClient]:
    """The registry app in process, lifespan included, behind an httpx client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry", timeout=120) as client:
            yield client


def dead_address() -> str:
    """``127.0.0.1:<port>`` where nothing listens."""
    return f"127.0.0.1:{free_port()}"
