"""The registry's SQLAlchemy engine: SQLite by default, PostgreSQL (or any SQLAlchemy URL) by setting.

SQLAlchemy runs synchronously here; :meth:`Database.transaction` runs one unit of work
in a worker thread so the event loop never blocks on the database.

On SQLite every transaction starts with ``BEGIN IMMEDIATE``: it takes the database's write
lock up front (waiting up to the busy timeout for it), so a unit of work's reads and writes
are one transaction and concurrent ones queue up. (The driver by default begins only at the
first write, leaving earlier reads outside the transaction — a read-modify-write could lose
an update — and a deferred ``BEGIN`` would fail with "database is locked" when two readers
both try to write.) PostgreSQL keeps its default (READ COMMITTED); units of work that must
not race take row locks (``SELECT ... FOR UPDATE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio.to_thread
from sqlalchemy import Engine, create_engine, event, func, insert, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.registry import migrations
from services.registry.models import CONTROLLER_LEASE, POLICY_REVISION_COUNTER, Base, Lease, RevisionCounter, utcnow

P = ParamSpec("P")
T = TypeVar("T")
logger = logging.getLogger("mlfleet.registry.database")


def _engine_options(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return {"pool_pre_ping": True}
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return {"connect_args": {"check_same_thread": False, "timeout": 30}}


def _begin_immediately(engine: Engine) -> None:
    """Make SQLite transactions start with ``BEGIN IMMEDIATE`` (SQLAlchemy's pysqlite recipe): the driver's own
    deferred ``BEGIN`` is switched off and the engine's ``begin`` event emits the immediate one instead."""

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, **_engine_options(url))
        if self.engine.dialect.name == "sqlite":
            _begin_immediately(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision, then add the fleet-wide counter and lease rows."""
        migrations.upgrade(self.engine)
        self._add_missing_row(RevisionCounter, POLICY_REVISION_COUNTER, value=0)
        self.add_lease(CONTROLLER_LEASE)

    def add_lease(self, name: str) -> None:
        """Create the lease ``name``, free, unless it exists (see :mod:`services.registry.lease`)."""
        self._add_missing_row(Lease, name, holder="", expires_at=utcnow())

    def _add_missing_row(self, table: type[Base], name: str, **values: Any) -> None:
        """Insert the row ``name`` of ``table`` unless it exists (another replica may insert it at the same time)."""
        try:
            with self._sessions.begin() as session:
                if session.get(table, name) is None:
                    session.execute(insert(table).values(name=name, **values))
        except IntegrityError:
            logger.info("%s %r created by another registry process", table.__tablename__, name)

    async def transaction(self, work: Callable[Concatenate[Session, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``work(session, ...)`` in one transaction, off the event loop; commit unless it raises."""
        return await anyio.to_thread.run_sync(partial(self._run, work, *args, **kwargs))

    def _run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._sessions.begin() as session:
            return work(session, *args, **kwargs)

    async def ping(self) -> bool:
        def select_one(session: Session) -> None:
            session.execute(select(text("1")))

        try:
            await self.transaction(select_one)
        except SQLAlchemyError:
            logger.warning("database is not reachable", exc_info=True)
            return False
        return True

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """Hold ``name`` exclusively across the fleet's registry replicas while the block runs, awaits included (a
        Triton load between reading a plan and writing a policy). On PostgreSQL a session-level advisory lock, taken
        by polling (so a cancelled waiter leaves nothing behind) on a connection of its own that is closed, not
        pooled, afterwards: closing the session releases the lock whatever happened, while a pooled connection would
        have kept it. On SQLite, which one registry process serves, nothing more than the caller's own locks."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)
        connection = await anyio.to_thread.run_sync(self._autocommit_connection)
        try:
            while not await anyio.to_thread.run_sync(partial(_try_advisory_lock, connection, key)):
                await asyncio.sleep(EXCLUSIVE_POLL_S)
            yield
        finally:
            with contextlib.suppress(SQLAlchemyError):
                await anyio.to_thread.run_sync(connection.invalidate)
            await anyio.to_thread.run_sync(connection.close)

    def _autocommit_connection(self) -> Connection:
        return self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def dispose(self) -> None:
        self.engine.dispose()


EXCLUSIVE_POLL_S = 0.05
"""How often a replica waiting for another's exclusive hold asks again."""


def _try_advisory_lock(connection: Connection, key: int) -> bool:
    return bool(connection.execute(select(func.pg_try_advisory_lock(key))).scalar_one())
