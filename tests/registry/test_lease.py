"""The lease row on SQLite and PostgreSQL: one holder at a time, taken over after expiry or release."""

from __future__ import annotations

import asyncio
import uuid


from services.registry.database import Database
from services.registry.lease import Lease

TTL_S = 0.5


def replicas(database: Database) -> tuple[Lease, Lease]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    database.add_lease(name)
    return (Lease(database, name=name, ttl_s=TTL_S, holder="replica-a"),
            Lease(database, name=name, ttl_s=TTL_S, holder="replica-b"))


async def test_one_replica_holds_the_lease_and_renews_it(database):
    a, b = replicas(database)
    assert await a.renew() and a.held
    assert not await b.renew() and not b.held
    for _ in range(3):
        await asyncio.sleep(TTL_S / 2)
        assert await a.renew()
        assert not await b.renew()


async def test_a_lease_left_to_expire_goes_to_another_replica(database):
    a, b = replicas(database)
    assert await a.renew()
    await asyncio.sleep(TTL_S + 0.1)
    assert not a.held
    assert await b.renew() and b.held
    assert not await a.renew()


async def test_a_released_lease_is_free_at_once(database):
    a, b = replicas(database)
    assert await a.renew()
    await a.release()
    assert not a.held
    assert await b.renew()


async def test_replicas_racing_for_a_free_lease_get_it_once(database):
    name = f"test-{uuid.uuid4().hex[:10]}"
    database.add_lease(name)
    contenders = [Lease(database, name=name, ttl_s=30, holder=f"replica-{i}") for i in range(6)]
    taken = await asyncio.gather(*(lease.renew() for lease in contenders))
    assert sum(taken) == 1
