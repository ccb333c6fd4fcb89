"""One Redis connection shared by all its callers, their commands pipelined: a client for the hot path.

redis-py's asyncio client checks a connection out of its pool for every command and runs it
through its retry, health-check and script layers, reading the reply in the caller's task.
For the gateway's feature lookup (then one script call) that was about 90 µs of CPU per lookup
here; writing the command (packed by hiredis) on one shared connection and handing replies to
callers in order costs about 60 µs. Pipelining also makes a deadline cheap: a caller that
gives up leaves its reply to be read and dropped, so the connection stays in step (redis-py
closes a connection whose reply was abandoned, and the next command opens a new one).

redis-py still opens and authenticates each connection (the fleet's URL handling, TLS, ``AUTH``,
``SELECT``: :func:`services.common.redis.connection_pool`) and packs the commands. Then the
connection's transport is handed to a protocol of this module, which parses replies (hiredis) as
they arrive and settles their callers at once: a reader task would take one more turn of the
event loop per reply to wake, and on a busy gateway a turn is a few hundred microseconds of every
lookup. The take-over reads two attributes of redis-py's asyncio connection (``_reader``,
``_writer``) and its error-reply mapping, so ``pyproject.toml`` bounds redis-py below its next
major version; ``tests/common/test_pipelined_redis.py`` is what to run after moving that bound.
Each connection has its own queue of unanswered calls, so a reply can only reach a call sent on
the same connection. A connection that fails fails every call waiting on
it, and the next call opens a new one. When a caller gives up and the oldest unanswered call
has waited ``stale_after_s``, the connection is presumed stuck: it is dropped and its calls fail
with ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, NoScriptError, ResponseError

from services.common.futures import settle
from services.common.redis import connection_pool

NOT_ENOUGH_DATA = object()
"""What the reply parser returns while a reply is incomplete (not ``False``, which a RESP3 boolean can be)."""


@dataclass(frozen=True)
class Script:
    """A Lua script for :meth:`PipelinedRedis.run_script`, with the SHA-1 Redis knows it by."""

    source: str

    @functools.cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


class PackedCommands(NamedTuple):
    """Commands already packed in RESP, and how many they are (the replies their call waits for)."""

    data: bytes
    count: int


def pack_hmgets(keys: Sequence[bytes], fields: Sequence[bytes]) -> PackedCommands:
    """``HMGET key *fields`` for each of ``keys``, in RESP (byte for byte what hiredis packs). The fields' part is the
    same for every key and is packed once: hiredis packs each command whole, ~0.7 µs a command here against ~0.25,
    and a 32-row feature lookup sends up to 64 of them."""
    head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)  # the name, the key, the fields
    tail = b"".join([b"$%d\r\n%s\r\n" % (len(field), field) for field in fields])
    return PackedCommands(b"".join([b"%s$%d\r\n%s\r\n%s" % (head, len(key), key, tail) for key in keys]), len(keys))


def _read_outcome(task: asyncio.Task[None]) -> None:
    """Read a task's failure even when nobody waits for it (an opening every caller gave up on, a closing): asyncio
    would otherwise log it as never retrieved when the task is collected, from whatever code the collection
    interrupts (inside ``compile`` that is a ``SystemError`` in Python 3.11)."""
    if not task.cancelled():
        task.exception()


class _Call:
    """One caller's commands on the wire: the future their replies settle, when they were sent, how many replies
    are due and those read so far."""

    __slots__ = ("future", "sent", "due", "replies")

    def __init__(self, future: asyncio.Future[Any], due: int) -> None:
        self.future = future
        self.sent = time.monotonic()
        self.due = due
        self.replies: list[Any] = []


class _Link(asyncio.Protocol):
    """One open connection (its transport taken over from redis-py) and its unanswered calls, in reply order: each
    reply is parsed as its bytes arrive and handed to its call there and then."""

    def __init__(self, connection: AbstractConnection, on_failure: Callable[[_Link, Exception], None]) -> None:
        self.connection = connection
        self.transport: asyncio.Transport = connection._writer.transport  # type: ignore[union-attr]
        self.pending: deque[_Call] = deque()
        self.closed = False
        # Error replies become redis-py's exception classes, as its own hiredis parser makes them.
        self._parser = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error,
                                      notEnoughData=NOT_ENOUGH_DATA)
        self._on_failure = on_failure
        self.transport.set_protocol(self)

    @property
    def usable(self) -> bool:
        return not self.closed and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._parser.feed(data)
        try:
            while (reply := self._parser.gets()) is not NOT_ENOUGH_DATA:
                if isinstance(reply, RedisConnectionError):  # LOADING, NOAUTH, too many clients: this connection is done
                    raise reply
                if not self.pending:
                    raise RedisConnectionError("Redis answered a call that was never sent")
                call = self.pending[0]
                call.replies.append(reply)
                if len(call.replies) < call.due:
                    continue
                self.pending.popleft()
                settle(call.future, next((r for r in call.replies if isinstance(r, ResponseError)), call.replies))
        except Exception as exc:  # a malformed or unexpected reply: this connection is out of step
            self._on_failure(self, exc)

    def eof_received(self) -> bool:
        self._on_failure(self, RedisConnectionError("Redis closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_failure(self, RedisConnectionError(f"connection lost: {exc}" if exc else "connection closed"))


class PipelinedRedis:
    def __init__(self, url: str, *, connect_timeout_s: float, stale_after_s: float, max_pending: int = 10_000) -> None:
        """``stale_after_s``: a caller that gives up while the connection's oldest unanswered call has waited this long
        drops the connection. ``max_pending``: calls beyond this many unanswered ones fail at once."""
        self._pool = connection_pool(url, timeout_s=connect_timeout_s, reply_timeout=False)
        if str(self._pool.connection_kwargs.get("protocol") or 2) != "2":
            # RESP3 servers may push messages (client tracking) between replies; this reader takes every message
            # for the next reply.
            raise ValueError("the pipelined Redis client speaks RESP2; drop protocol=3 from the Redis URL")
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

    async def run_script(self, script: Script, keys: Sequence[bytes | str], args: Sequence[bytes | str | int | float]) -> Any:
        """Run a Lua script by its SHA-1 (``EVALSHA``), sending its source (``EVAL``, after which Redis keeps it again)
        only when Redis does not have it: a restarted Redis, or ``SCRIPT FLUSH``. What redis-py's scripts do."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def execute_many(self, commands: Sequence[Sequence[bytes | str | int | float]]) -> list[Any]:
        """Send several commands in one write and return their replies, in order, once all have come (an error reply
        raises the first ``ResponseError``). Unlike a script, Redis runs them as plain commands: no Lua interpreter
        set up per call, no reply converted to Lua and back."""
        if not commands:
            return []
        return await self._call(commands)

    async def execute_packed(self, packed: Sequence[PackedCommands]) -> list[Any]:
        """Send commands already packed (:func:`pack_hmgets`) in one write and return their replies, in order, as
        :meth:`execute_many` does."""
        count = sum(part.count for part in packed)
        if not count:
            return []
        link = await self._usable_link()
        return await self._send(link, [b"".join([part.data for part in packed])], count)

    async def _call(self, commands: Sequence[Sequence[bytes | str | int | float]]) -> list[Any]:
        link = await self._usable_link()
        # Packed as the fleet's other clients pack (hiredis, or redis-py for what hiredis would pack differently); a
        # value that cannot be packed fails here, before anything is queued.
        return await self._send(link, link.connection.pack_commands(commands), len(commands))

    async def _usable_link(self) -> _Link:
        while self._link is None or not self._link.usable:
            if self._link is not None:
                self._drop(self._link, RedisConnectionError("connection closed"))
            await self._open()
        return self._link

    async def _send(self, link: _Link, pieces: list[bytes], due: int) -> list[Any]:
        """Write ``pieces`` (``due`` commands) on ``link`` and wait for their replies."""
        if len(link.pending) >= self._max_pending:
            raise RedisConnectionError(f"{len(link.pending)} Redis calls are unanswered; not sending more")
        call = _Call(asyncio.get_running_loop().create_future(), due)
        link.pending.append(call)
        # Written (or buffered by the transport) before the first await: commands reach the socket in the order
        # their calls were queued. A broken socket fails the call through ``connection_lost``.
        link.transport.writelines(pieces)
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
            self._drop(link, RedisConnectionError("client closed"))
        if self._closing:
            await asyncio.wait(self._closing)

    async def _open(self) -> None:
        """Open the shared connection, once however many callers wait for it (a caller giving up does not cancel
        the opening for the others)."""
        if self._closed:
            raise RedisConnectionError("client closed")
        if self._opening is None or self._opening.done():
            self._opening = asyncio.create_task(self._connect(), name="redis-pipelined-connect")
            self._opening.add_done_callback(_read_outcome)
        await asyncio.shield(self._opening)

    async def _connect(self) -> None:
        connection = self._pool.make_connection()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await connection.connect()
            if self._closed:
                raise RedisConnectionError("client closed")
            if connection._reader is None or connection._reader.at_eof():  # closed during the handshake
                raise RedisConnectionError("Redis closed the connection as it opened")
            self._link = _Link(connection, self._drop)
        except BaseException:
            await connection.disconnect(nowait=True)
            raise

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
        link.transport.close()
        closing = asyncio.get_running_loop().create_task(link.connection.disconnect(nowait=True))
        self._closing.add(closing)
        closing.add_done_callback(self._closed_one)

    def _closed_one(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        _read_outcome(task)  # closing a broken socket may fail; nothing is left to do about it
