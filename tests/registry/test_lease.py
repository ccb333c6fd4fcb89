"""The lease row on SQLite and PostgreSQL: one holder at a time, taken over after expiry or release."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from services.registry import repository
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


class SlowRenewals:
    """The database, each lease renewal held in its worker thread for ``delay_s`` first (a busy database)."""

    def __init__(self, database: Database, delay_s: float) -> None:
        self._database = database
        self._delay_s = delay_s

    async def transaction(self, work, /, *args, **kwargs):
        if work is not repository.take_lease:
            return await self._database.transaction(work, *args, **kwargs)

        def slowly(session, *a, **kw):
            time.sleep(self._delay_s)
            return work(session, *a, **kw)

        return await self._database.transaction(slowly, *args, **kwargs)


async def test_a_lease_released_while_its_renewal_is_still_running_is_free_once_released(database):
    """Shutdown cancels the keeper mid-renewal; the renewal's thread still commits, and a release sent before that
    commit would leave the lease renewed for a whole length (a restarted registry's controller waited for it)."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    database.add_lease(name)
    a = Lease(SlowRenewals(database, delay_s=0.3), name=name, ttl_s=30, holder="replica-a")
    b = Lease(database, name=name, ttl_s=30, holder="replica-b")
    assert await a.renew()
    keeper = asyncio.create_task(a.keep())  # renews at once, slowly
    await asyncio.sleep(0.05)
    keeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await keeper
    await a.release()
    await asyncio.sleep(0.4)  # past the renewal's commit, however the release was ordered against it
    assert await b.renew(), "the lease went back to replica-a after its release"
