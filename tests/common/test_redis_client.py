"""The fleet's Redis client: hiredis packs its commands, byte for byte as redis-py would, on every URL scheme."""

from __future__ import annotations

import asyncio
from enum import IntEnum

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from services.common.redis import HiredisConnection, connect


@pytest.mark.parametrize("args", [
    ("SET", "key", "value"),
    ("EVALSHA", "a" * 40, 2, b"k1", b"k2", 1.5, 0.1, 1e20, -7, memoryview(b"raw")),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", "x"),
    ("XADD", "s", "MAXLEN", "~", 1000, "*", "event", "é" * 3),
])
def test_commands_are_packed_as_redis_py_packs_them(args):
    assert b"".join(HiredisConnection().pack_command(*args)) == b"".join(Connection().pack_command(*args))


class Level(IntEnum):
    HIGH = 3


class Count(int):
    pass


@pytest.mark.parametrize("value", [Count(7), Level.HIGH])
def test_what_hiredis_cannot_pack_is_packed_by_redis_py(value):
    assert HiredisConnection().pack_command("SET", "key", value) == Connection().pack_command("SET", "key", value)


@pytest.mark.parametrize("bad", [True, None])
def test_values_redis_py_refuses_are_refused(bad):
    with pytest.raises(DataError):
        HiredisConnection().pack_command("SET", "key", bad)


@pytest.mark.parametrize("commands", [
    [("HMGET", b"k1", b"f1", b"f2"), ("HMGET", b"k2", b"f1", b"f2")],
    [("CONFIG GET", "maxmemory"), ("SET", "key", memoryview(b"raw")), ("XADD", "s", "*", "event", "é" * 3)],
    [("SET", "key", "x" * 10_000), ("GET", "key")],  # beyond redis-py's buffer cutoff: it sends that one apart
    [("SET", "key", Count(7)), ("GET", "key")],  # what hiredis cannot pack: the pipeline is packed by redis-py
])
def test_pipelines_are_packed_as_redis_py_packs_them(commands):
    assert b"".join(HiredisConnection().pack_commands(commands)) == b"".join(Connection().pack_commands(commands))


def test_a_pipeline_with_a_value_redis_py_refuses_is_refused():
    with pytest.raises(DataError):
        HiredisConnection().pack_commands([("GET", "key"), ("SET", "key", None)])


def test_a_connection_encoding_text_otherwise_packs_as_redis_py_does():
    args = ("SET", "key", "café")
    latin = HiredisConnection(encoding="latin-1")
    assert latin.pack_command(*args) == Connection(encoding="latin-1").pack_command(*args)
    assert b"".join(latin.pack_command(*args)) != b"".join(HiredisConnection().pack_command(*args))


def test_the_urls_options_reach_the_connections():
    options = connect("redis://user:secret@cache.example:6390/3?client_name=gw&protocol=3",
                      timeout_s=1.5).connection_pool.connection_kwargs
    assert {k: options[k] for k in ("username", "password", "host", "port", "db", "client_name", "protocol")} == {
        "username": "user", "password": "secret", "host": "cache.example", "port": 6390, "db": 3,
        "client_name": "gw", "protocol": "3"}  # as redis-py's from_url leaves it
    assert (options["socket_connect_timeout"], options["socket_timeout"], options["health_check_interval"]) == (1.5, 1.5, 30)
    assert connect("redis://127.0.0.1:6379/0", reply_timeout=False).connection_pool.connection_kwargs["socket_timeout"] is None


@pytest.mark.parametrize(("url", "base"), [("redis://127.0.0.1:6379/0", Connection),
                                           ("rediss://cache.example:6380/0", SSLConnection),
                                           ("unix:///run/redis.sock?db=1", UnixDomainSocketConnection)])
def test_each_scheme_keeps_its_transport(url, base):
    client = connect(url)
    assert issubclass(client.connection_pool.connection_class, base)
    assert client.connection_pool.connection_class is not base


def test_an_unknown_scheme_is_refused_clearly():
    with pytest.raises(ValueError, match="redis://, rediss:// or unix://"):
        connect("http://127.0.0.1:6379/0")


def test_a_transaction_with_a_script_runs_on_a_real_redis(redis_url):
    async def run() -> list:
        client = connect(redis_url)
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset("mlfleet:test:packing", "v", b"\x00\xffbytes")
                pipe.eval("return {KEYS[1], ARGV[1], #ARGV}", 1, "mlfleet:test:packing", 2.5, "é", b"\x00")
                pipe.hget("mlfleet:test:packing", "v")
                pipe.delete("mlfleet:test:packing")
                return await pipe.execute()
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [1, [b"mlfleet:test:packing", b"2.5", 3], b"\x00\xffbytes", 1]


def test_a_client_without_retries_sends_a_failed_command_once():
    pool = connect("redis://127.0.0.1:6379/0", retries=False).connection_pool
    assert pool.connection_kwargs["retry"].get_retries() == 0
