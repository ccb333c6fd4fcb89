"""The previous stable stays loaded on the real Triton for its retention, then the reconcile loop unloads it;
a rollback after that reloads it before the policy changes, and the version rolled back from is unloaded next."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.registry.factories import model_name
from tests.registry.harness import running_registry
from tests.registry.test_api import create_model, register

RETENTION_S = 2.0


async def ready_versions(triton, model: str) -> set[int]:
    """Which of versions 1 and 2 Triton reports ready (KServe v2 readiness: 200 when ready)."""
    async with httpx.AsyncClient(base_url=f"http://{triton.http_url}", timeout=5) as http:
        return {v for v in (1, 2) if (await http.get(f"/v2/models/{model}/versions/{v}/ready")).status_code == 200}


async def routed_versions(client, model: str) -> list[int]:
    route = next(m for m in (await client.get("/v1/routes")).json()["models"] if m["model"] == model)
    return [v["version"] for v in route["versions"]]


async def test_the_previous_stable_is_unloaded_after_its_retention_and_a_later_rollback_reloads_it(
        sqlite_settings, triton, trained, trained_v2):
    settings = sqlite_settings.model_copy(update={"previous_stable_retention_s": RETENTION_S,
                                                  "reconcile_interval_s": 0.25, "unneeded_version_grace_s": 0.5})
    async with running_registry(settings) as client:
        name = model_name()
        await create_model(client, name)
        await register(client, name, trained.onnx)
        await register(client, name, trained_v2.onnx)
        assert (await client.put(f"/v1/models/{name}/traffic", json={"stable": 1})).status_code == 200
        promoted_at = time.monotonic()
        assert (await client.put(f"/v1/models/{name}/traffic", json={"stable": 2})).status_code == 200
        assert await ready_versions(triton, name) == {1, 2}
        assert await routed_versions(client, name) == [1, 2]

        while await ready_versions(triton, name) != {2}:
            assert time.monotonic() - promoted_at < RETENTION_S + 20, "v1 still loaded long after its retention"
            await asyncio.sleep(0.2)
        assert time.monotonic() - promoted_at >= RETENTION_S
        assert await routed_versions(client, name) == [2]

        rollback = await client.post(f"/v1/models/{name}/rollback", json={"reason": "late rollback"})
        assert rollback.status_code == 200, rollback.text
        assert rollback.json()["stable"] == 1
        assert await routed_versions(client, name) == [1]
        # the version rolled back from is no rollback target: served beside v1 until the switch, then unloaded by
        # the reconcile loop's next pass
        rolled_back_at = time.monotonic()
        while await ready_versions(triton, name) != {1}:
            assert time.monotonic() - rolled_back_at < 20, "v2 still loaded long after the rollback"
            await asyncio.sleep(0.2)

        event = (await client.get("/v1/audit", params={"model": name, "limit": 1})).json()["data"][0]
        assert (event["action"], event["detail"]["loaded_versions"]) == ("traffic.rollback", [1])

        # in step, the reconcile loop leaves Triton alone: no reload pass after pass
        loads = await triton_loads(client)
        await asyncio.sleep(2.0)  # eight passes
        assert await triton_loads(client) == loads


async def triton_loads(client) -> float:
    """How many loads the registry has made on Triton, from its metrics."""
    text = (await client.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mlfleet_registry_triton_load_seconds_count"))
