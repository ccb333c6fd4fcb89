"""Helpers to run the registry app in process for tests, and to act under API keys."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

from mlfleet.runtime.processes import free_port
from services.registry.app import create_app
from services.registry.settings import RegistrySettings


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.asynccontextmanager
async def running_registry(settings: RegistrySettings) -> AsyncIterator[httpx.AsyncClient]:
    """The registry app in process, lifespan included, behind an httpx client that sends the bootstrap admin key."""
    app = create_app(settings)
    key = settings.bootstrap_key()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry", timeout=120,
                                     headers=bearer(key) if key else None) as client:
            yield client


async def new_key(client: httpx.AsyncClient, name: str, role: str) -> dict[str, str]:
    """Create a key (the client must be an admin's) and return its ``Authorization`` header."""
    response = await client.post("/v1/keys", json={"name": name, "role": role})
    assert response.status_code == 201, response.text
    return bearer(response.json()["key"])


def dead_address() -> str:
    """``127.0.0.1:<port>`` where nothing listens."""
    return f"127.0.0.1:{free_port()}"
