"""One Redis connection shared by all its callers, their commands pipelined: a client for the hot path.

redis-py's asyncio client checks a connection out of its pool for every command and runs it
through its retry, health-check and script layers, reading the reply in the caller's task.
For the gateway's feature lookup (then one script call) that was about 90 µs of CPU per lookup
here; writing the command (packed by hiredis) on one shared connection and handing replies to
callers in order costs about 60 µs. Pipelining also makes a deadline cheap: a caller that
gives up leaves its reply to be read and dropped, so the connection stays in step (redis-py
closes a connection whose reply was abandoned, and the next command opens a new one).

redis-py still opens and authenticates each connection (the fleet's URL handling, TLS, ``AUTH``,
``SELECT``: :func:`services.common.redis.connection_pool`) and reads its replies with its hiredis parser.
Each connection has its own queue of unanswered calls and its own reader, so a reply can only
reach a call sent on the same connection. A connection that fails fails every call waiting on
it, and the next call opens a new one. When a caller gives up and the oldest unanswered call
has waited ``stale_after_s``, the connection is presumed stuck: it is dropped and its calls fail
with ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from services.common.futures import settle
from services.common.redis import connection_pool


class _Call:
    """One caller's commands on the wire: the future their replies settle, when they were sent, how many replies
    are due and those read so far."""

    __slots__ = ("future", "sent", "due", "replies")

    def __init__(self, future: asyncio.Future[Any], due: int) -> None:
        self.future = future
        self.sent = time.monotonic()
        self.due = due
        self.replies: list[Any] = []


class _Link:
    """One open connection, its reader task and its unanswered calls, in reply order."""

    __slots__ = ("connection", "pending", "reader", "closed")

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self.pending: deque[_Call] = deque()
        self.reader: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def usable(self) -> bool:
        return not self.closed and self.connection.is_connected


class PipelinedRedis:
    def __init__(self, url: str, *, connect_timeout_s: float, stale_after_s: float, max_pending: int = 10_000) -> None:
        """``stale_after_s``: a caller that gives up while the connection's oldest unanswered call has waited this long
        drops the connection. ``max_pending``: calls beyond this many unanswered ones fail at once."""
        self._pool = connection_pool(url, timeout_s=connect_timeout_s, reply_timeout=False)
        self._connect_timeout_s = connect_timeout_s
        self._stale_after_s = stale_after_s
        self._max_pending = max_pending
        self._link: _Link | None = None
        self._opening: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def execute(self, *args: bytes | str | int | float) -> Any:
        """Send one command and return its reply, undecoded (an error reply raises ``ResponseError``)."""
        return (await self._call((args,)))[0]

    async def execute_many(self, commands: Sequence[Sequence[bytes | str | int | float]]) -> list[Any]:
        """Send several commands in one write and return their replies, in order, once all have come (an error reply
        raises the first ``ResponseError``). Unlike a script, Redis runs them as plain commands: no Lua interpreter
        set up per call, no reply converted to Lua and back."""
        if not commands:
            return []
        return await self._call(commands)

    async def _call(self, commands: Sequence[Sequence[bytes | str | int | float]]) -> list[Any]:
        while self._link is None or not self._link.usable:
            await self._open()
        link = self._link
        # Packed as the fleet's other clients pack (hiredis, or redis-py for what hiredis would pack differently); a
        # value that cannot be packed fails here, before anything is queued.
        packed = link.connection.pack_commands(commands)
        if len(link.pending) >= self._max_pending:
            raise RedisConnectionError(f"{len(link.pending)} Redis calls are unanswered; not sending more")
        call = _Call(asyncio.get_running_loop().create_future(), len(commands))
        link.pending.append(call)
        try:
            # On a connected connection, without health check or socket timeout, redis-py writes before its first
            # await: commands reach the socket in the order their calls were queued.
            await link.connection.send_packed_command(packed, check_health=False)
        except BaseException as exc:  # the write may be partial: this connection is out of step
            call.future.cancel()
            self._drop(link, exc if isinstance(exc, Exception) else RedisConnectionError("write interrupted"))
            raise
        try:
            return await call.future
        except asyncio.CancelledError:
            if link.pending and time.monotonic() - link.pending[0].sent >= self._stale_after_s:
                self._drop(link, TimeoutError(f"Redis did not answer for {self._stale_after_s:g}s"))
            raise

    async def aclose(self) -> None:
        """Close the connection; calls still waiting fail with ``ConnectionError``, later calls are refused."""
        self._closed = True
        if self._opening is not None:
            await asyncio.wait([self._opening])
        link = self._link
        if link is not None:
            reader = link.reader
            self._drop(link, RedisConnectionError("client closed"))
            if reader is not None:
                await asyncio.wait([reader])
        if self._closing:
            await asyncio.wait(self._closing)

    async def _open(self) -> None:
        """Open the shared connection, once however many callers wait for it (a caller giving up does not cancel
        the opening for the others)."""
        if self._closed:
            raise RedisConnectionError("client closed")
        if self._opening is None or self._opening.done():
            self._opening = asyncio.create_task(self._connect(), name="redis-pipelined-connect")
        await asyncio.shield(self._opening)

    async def _connect(self) -> None:
        connection = self._pool.make_connection()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await connection.connect()
            if self._closed:
                raise RedisConnectionError("client closed")
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        link = _Link(connection)
        link.reader = asyncio.create_task(self._read_replies(link), name="redis-pipelined-replies")
        self._link = link

    async def _read_replies(self, link: _Link) -> None:
        try:
            while True:
                try:
                    reply = await link.connection.read_response(disable_decoding=True)
                except ResponseError as exc:
                    reply = exc
                if not link.pending:
                    raise RedisConnectionError("Redis answered a call that was never sent")
                call = link.pending[0]
                call.replies.append(reply)
                if len(call.replies) < call.due:
                    continue
                link.pending.popleft()
                settle(call.future, next((r for r in call.replies if isinstance(r, ResponseError)), call.replies))
        except asyncio.CancelledError:
            self._drop(link, RedisConnectionError("connection closed"))
            raise
        except Exception as exc:
            self._drop(link, exc)

    def _drop(self, link: _Link, failure: Exception) -> None:
        """Close ``link`` and fail its unanswered calls with ``failure``; the next call opens a new connection."""
        if link.closed:
            return
        link.closed = True
        if self._link is link:
            self._link = None
        while link.pending:
            future = link.pending.popleft().future
            if not future.done():
                future.set_exception(failure)
        if link.reader is not None and link.reader is not asyncio.current_task():
            link.reader.cancel()
        closing = asyncio.get_running_loop().create_task(link.connection.disconnect(nowait=True))
        self._closing.add(closing)
        closing.add_done_callback(self._closed_one)

    def _closed_one(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        if not task.cancelled():
            task.exception()  # closing a broken socket may fail; nothing is left to do about it
