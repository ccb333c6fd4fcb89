"""A lease in the registry's database, so that one replica at a time does a job (the rollout controller).

The database is the source of truth every replica shares, so the lease is a row there
(``leases``: name, holder, expiry) taken and renewed with a conditional UPDATE — it goes to
a replica only if that replica holds it already or it expired. The holder renews it every
third of its length in the background; it counts as held only until the expiry of its last
successful renewal, measured from before that renewal was sent, so a replica never believes
it holds a lease the database has already given to another. Expiry times come from each
replica's clock: replicas' clocks must agree to well within the lease length (NTP does).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from datetime import timedelta

from services.registry import repository
from services.registry.database import Database
from services.registry.models import utcnow

logger = logging.getLogger("mlfleet.registry.lease")


def default_holder() -> str:
    """``hostname-pid-random``: unique per process, readable in the ``leases`` table."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Lease:
    def __init__(self, database: Database, *, name: str, ttl_s: float, holder: str | None = None) -> None:
        self.name = name
        self.holder = holder or default_holder()
        self._database = database
        self._ttl_s = ttl_s
        self._held_until = 0.0
        self._renewal: asyncio.Task[bool] | None = None
        """The last renewal's transaction. Its worker thread commits whether or not the renewal's caller is
        cancelled (cancelling the task that waits does not stop the thread), so :meth:`release` waits for it."""

    @property
    def held(self) -> bool:
        """Whether this replica holds the lease now (as of its last renewal)."""
        return time.monotonic() < self._held_until

    async def renew(self) -> bool:
        """Take or renew the lease; whether this replica holds it now."""
        sent = time.monotonic()
        now = utcnow()
        self._renewal = asyncio.ensure_future(self._database.transaction(
            repository.take_lease, name=self.name, holder=self.holder, now=now,
            expires_at=now + timedelta(seconds=self._ttl_s)))
        taken = await asyncio.shield(self._renewal)
        if taken and not self.held:
            logger.info("took the %s lease as %s", self.name, self.holder)
        elif not taken and self.held:
            logger.warning("lost the %s lease", self.name)
        self._held_until = sent + self._ttl_s if taken else 0.0
        return taken

    async def keep(self) -> None:
        """Renew now and every third of the lease length, logging (never raising) failures; run as a task."""
        while True:
            try:
                await self.renew()
            except Exception:
                logger.exception("could not renew the %s lease", self.name)
            await asyncio.sleep(self._ttl_s / 3)

    async def release(self) -> None:
        """Give the lease up at once (on shutdown), so another replica need not wait for it to expire; a failure
        is logged, and the lease then expires on its own. A renewal still running (its caller cancelled mid-way)
        commits first: released before it, the lease would be renewed for a whole length after its release."""
        self._held_until = 0.0
        if self._renewal is not None:
            await asyncio.wait([self._renewal])
        try:
            await self._database.transaction(repository.release_lease, name=self.name, holder=self.holder,
                                             now=utcnow())
        except Exception:
            logger.warning("could not release the %s lease; it expires on its own", self.name, exc_info=True)
