"""Redis names shared by the fleet and a client factory."""

from __future__ import annotations

from urllib.parse import urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

PREDICTIONS_STREAM = "mlfleet:events:predictions"
"""Stream of :class:`~services.common.schemas.PredictionEvent` (field ``event``, JSON)."""

POLICY_CHANNEL = "mlfleet:policy"
"""Pub/sub channel of :class:`~services.common.schemas.PolicyChanged` messages."""


class HiredisPacking:
    """Commands packed by hiredis (C), as redis-py's synchronous client does when hiredis is installed; its asyncio
    connection packs in Python. Measured here: 6 → 2 µs for a 17-argument script call, and a quarter of the
    monitor's packing time for a batch's script of a few thousand arguments. What hiredis cannot pack the same way
    (an ``int`` subclass, a refused value, a connection not encoding text as strict UTF-8) is left to redis-py."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        encoder = self.encoder
        self._hiredis_packs = encoder.encoding_errors == "strict" and encoder.encoding.replace("-", "").lower() == "utf8"

    def pack_command(self, *args):
        if not self._hiredis_packs:
            return super().pack_command(*args)
        try:
            return [hiredis.pack_command(_name_split(args))]
        except TypeError:
            return super().pack_command(*args)

    def pack_commands(self, commands):
        """All of a pipeline's commands in one piece (the monitor's transactions; `PipelinedRedis.execute_many`):
        redis-py calls :meth:`pack_command` per command and joins the pieces in Python, which for 64 commands cost
        as much as packing them (101 against 50 µs here)."""
        if not self._hiredis_packs:
            return super().pack_commands(commands)
        try:
            return [b"".join([hiredis.pack_command(_name_split(command)) for command in commands])]
        except TypeError:
            return super().pack_commands(commands)


def _name_split(command):
    """``command`` with the literal arguments its name may carry ("CONFIG GET") split off, as redis-py does."""
    name = command[0]
    if (" " in name) if isinstance(name, str) else (b" " in name):
        return (*name.split(), *command[1:])
    return command


class HiredisConnection(HiredisPacking, Connection):
    pass


class HiredisSSLConnection(HiredisPacking, SSLConnection):
    pass


class HiredisUnixConnection(HiredisPacking, UnixDomainSocketConnection):
    pass


CONNECTION_CLASSES = {"redis": HiredisConnection, "rediss": HiredisSSLConnection, "unix": HiredisUnixConnection}
"""The connection class of each URL scheme: redis-py's own for that scheme, packing with hiredis."""


def connection_pool(url: str, *, timeout_s: float = 2.0, reply_timeout: bool = True) -> aioredis.ConnectionPool:
    """The pool behind :func:`connect`: its connections pack with hiredis and have its timeouts."""
    scheme = urlsplit(url).scheme
    if scheme not in CONNECTION_CLASSES:
        raise ValueError(f"a Redis URL starts with redis://, rediss:// or unix://, not {scheme or 'no scheme'}")
    options = {"socket_connect_timeout": timeout_s, "socket_timeout": timeout_s if reply_timeout else None,
               "health_check_interval": 30, "decode_responses": False,
               **parse_url(url), "connection_class": CONNECTION_CLASSES[scheme]}
    # What Redis.from_url does, except that the URL's scheme no longer overrides the connection class.
    return aioredis.ConnectionPool(**options)


def connect(url: str, *, timeout_s: float = 2.0, reply_timeout: bool = True, retries: bool = True) -> aioredis.Redis:
    """An asyncio Redis client with bounded connect and socket timeouts, packing commands with hiredis
    (:class:`HiredisPacking`).

    ``reply_timeout=False`` drops the socket timeout: redis-py then stops wrapping the read of every
    reply in its own timeout (a timer armed and cancelled per reply, a quarter of the monitor's CPU
    when it committed transactions of a thousand commands), and the caller must bound each call
    itself, e.g. with ``asyncio.timeout``. ``retries=False``: a failed command is not sent again (a lookup with a
    deadline of its own, or a transaction that must not be applied twice)."""
    client = aioredis.Redis.from_pool(connection_pool(url, timeout_s=timeout_s, reply_timeout=reply_timeout))
    if not retries:
        client.set_retry(Retry(NoBackoff(), 0))
    return client
