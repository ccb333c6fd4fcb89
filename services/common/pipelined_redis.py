"""One Redis connection shared by all its callers, their commands pipelined: a client for the hot path.

redis-py's asyncio client checks a connection out of its pool for every command and runs it
through its retry, health-check and script layers, reading the reply in the caller's task.
For the gateway's feature lookup (one script call) that was about 90 µs of CPU per lookup
here; writing the command packed by hiredis on one shared connection and handing replies to
callers in order costs about 60 µs. Pipelining also makes a deadline cheap: a caller that
gives up leaves its reply to be read and dropped, so the connection stays in step (redis-py
closes a connection whose reply was abandoned, and the next command opens a new one).

redis-py still opens and authenticates the connection (the fleet's URL handling, TLS, ``AUTH``,
``SELECT``: :func:`services.common.redis.connect`) and reads its replies with its hiredis parser.
A connection that fails fails every call waiting on it (and the next call opens a new one);
one that stops answering is dropped once a caller has waited ``stale_after_s`` for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from services.common.redis import connect


class PipelinedRedis:
    def __init__(self, url: str, *, connect_timeout_s: float, stale_after_s: float, max_pending: int = 10_000) -> None:
        """``stale_after_s``: a call that gives up after its oldest unanswered call on the connection has waited this
        long drops the connection. ``max_pending``: calls beyond this many unanswered ones fail at once."""
        self._pool = connect(url, timeout_s=connect_timeout_s, reply_timeout=False, retries=False).connection_pool
        self._connect_timeout_s = connect_timeout_s
        self._stale_after_s = stale_after_s
        self._max_pending = max_pending
        self._connection: AbstractConnection | None = None
        self._opening: asyncio.Task[AbstractConnection] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        """Each unanswered call's future and when it was sent, in the order Redis answers them."""

    async def execute(self, *args: bytes | str | int | float) -> Any:
        """Send one command and return its reply, undecoded (an error reply raises ``ResponseError``)."""
        connection = self._connection or await self._connect()
        if len(self._pending) >= self._max_pending:
            raise RedisConnectionError(f"{len(self._pending)} Redis calls are unanswered; not sending more")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((future, time.monotonic()))
        try:
            # Connected and without a health check, redis-py writes before its first await: calls reach the socket
            # in the order their futures were queued.
            await connection.send_packed_command([hiredis.pack_command(args)], check_health=False)
            return await future
        except asyncio.CancelledError:
            if self._pending and time.monotonic() - self._pending[0][1] >= self._stale_after_s:
                self._drop(connection, RedisConnectionError(f"Redis did not answer for {self._stale_after_s:g}s"))
            raise
        except (RedisConnectionError, OSError) as exc:
            self._drop(connection, exc)
            raise

    async def aclose(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        if self._connection is not None:
            self._drop(self._connection, RedisConnectionError("client closed"))
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pool.disconnect()

    async def _connect(self) -> AbstractConnection:
        """The shared connection, opened once however many callers wait for it (a caller giving up does not cancel
        the opening for the others)."""
        if self._opening is None or self._opening.done():
            self._opening = asyncio.create_task(self._open())
        return await asyncio.shield(self._opening)

    async def _open(self) -> AbstractConnection:
        connection = self._pool.make_connection()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await connection.connect()
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        self._connection = connection
        self._reader = asyncio.create_task(self._read_replies(connection), name="redis-pipelined-replies")
        return connection

    async def _read_replies(self, connection: AbstractConnection) -> None:
        pending = self._pending
        while True:
            try:
                reply = await connection.read_response(disable_decoding=True)
            except ResponseError as exc:
                reply = exc
            except BaseException as exc:
                failure = exc if isinstance(exc, Exception) else RedisConnectionError("connection closed")
                self._drop(connection, failure)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return
            future = pending.popleft()[0]
            if future.done():  # its caller gave up
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _drop(self, connection: AbstractConnection, failure: Exception) -> None:
        """Forget ``connection`` (if still current), fail its unanswered calls and close it."""
        if connection is not self._connection:
            return
        self._connection = None
        while self._pending:
            future = self._pending.popleft()[0]
            if not future.done():
                future.set_exception(failure)
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
        self._reader = None
        asyncio.get_running_loop().create_task(connection.disconnect(nowait=True))


class PipelinedScript:
    """A Lua script called by its SHA1 (``EVALSHA``), sent whole (``EVAL``, which also caches it) when Redis does
    not know it yet."""

    def __init__(self, redis: PipelinedRedis, body: str) -> None:
        self._redis = redis
        self._body = body
        self._sha = hashlib.sha1(body.encode()).hexdigest()

    async def __call__(self, keys: Sequence[bytes | str], args: Sequence[bytes | str | int | float]) -> Any:
        try:
            return await self._redis.execute("EVALSHA", self._sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._redis.execute("EVAL", self._body, len(keys), *keys, *args)
