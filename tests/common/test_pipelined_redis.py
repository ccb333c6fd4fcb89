"""The hot path's pipelined Redis client against a real Redis: replies reach their own callers, a caller that gives
up leaves the connection in step, a connection that fails or stops answering is replaced."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator

import hiredis
import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError

from services.common.pipelined_redis import PipelinedRedis, Script, pack_hmgets

EMPTY_LIST = "pipelined:empty"
"""Never pushed to: a ``BLPOP`` on it holds the connection for its whole timeout."""


def run(coroutine):
    return asyncio.run(coroutine)


@contextlib.asynccontextmanager
async def pipelined(url: str, *, stale_after_s: float = 2, **options) -> AsyncIterator[PipelinedRedis]:
    client = PipelinedRedis(url, connect_timeout_s=2, stale_after_s=stale_after_s, **options)
    try:
        yield client
    finally:
        await client.aclose()


async def give_up_on_blocked_call(client: PipelinedRedis, *, after_s: float, blocks_s: float) -> None:
    """Send a call that holds the connection ``blocks_s`` and stop waiting for it after ``after_s``."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(after_s):
            await client.execute("BLPOP", EMPTY_LIST, blocks_s)


def test_concurrent_calls_each_get_their_own_reply(redis_url):
    async def scenario():
        async with pipelined(redis_url) as client:
            await client.execute("DEL", "pipelined:list")
            replies = await asyncio.gather(*(client.execute("RPUSH", "pipelined:list", i) for i in range(300)),
                                           *(client.execute("ECHO", f"value-{i}") for i in range(300)))
            return replies, await client.execute("LRANGE", "pipelined:list", 0, -1)

    replies, stored = run(scenario())
    assert sorted(replies[:300]) == list(range(1, 301))
    assert replies[300:] == [f"value-{i}".encode() for i in range(300)]
    assert stored == [str(i).encode() for i in range(300)]  # written in the order they were called


def test_an_error_reply_fails_only_its_own_call(redis_url):
    async def scenario():
        async with pipelined(redis_url) as client:
            await client.execute("SET", "pipelined:text", "abc")
            return await asyncio.gather(client.execute("ECHO", "before"), client.execute("INCR", "pipelined:text"),
                                        client.execute("ECHO", "after"), return_exceptions=True)

    before, failed, after = run(scenario())
    assert (before, after) == (b"before", b"after")
    assert isinstance(failed, ResponseError) and "not an integer" in str(failed)


def test_commands_sent_together_get_their_replies_in_order_among_other_calls(redis_url):
    async def scenario():
        async with pipelined(redis_url) as client:
            await client.execute("DEL", "pipelined:hash")
            await client.execute("HSET", "pipelined:hash", "a", "1", "b", "2")
            many = [("HMGET", "pipelined:hash", "a", "b"), ("ECHO", "middle"), ("HMGET", "pipelined:absent", "a")]
            return await asyncio.gather(client.execute("ECHO", "first"), client.execute_many(many),
                                        client.execute("ECHO", "last"), client.execute_many([]))

    first, many, last, none = run(scenario())
    assert (first, last, none) == (b"first", b"last", [])
    assert many == [[b"1", b"2"], b"middle", [None]]


@pytest.mark.parametrize("keys, fields", [
    ([b"k1", b"\x00\r\n binary key"], [b"f1", b"f2"]),
    ([b"k"], [b"a" * 300]),
    ([b"k1", b"k2", b"k3"], [b""]),
])
def test_hmgets_are_packed_as_hiredis_packs_them(keys, fields):
    packed = pack_hmgets(keys, fields)
    assert packed.data == b"".join(hiredis.pack_command(("HMGET", key, *fields)) for key in keys)
    assert packed.count == len(keys)


def test_packed_commands_get_their_replies_in_order_among_other_calls(redis_url):
    async def scenario():
        async with pipelined(redis_url) as client:
            await client.execute("DEL", "pipelined:hash", "pipelined:other")
            await client.execute("HSET", "pipelined:hash", "a", "1", "b", "2")
            await client.execute("HSET", "pipelined:other", "b", "3")
            packed = [pack_hmgets([b"pipelined:hash", b"pipelined:absent"], [b"a", b"b"]),
                      pack_hmgets([b"pipelined:other"], [b"b"])]
            return await asyncio.gather(client.execute("ECHO", "first"), client.execute_packed(packed),
                                        client.execute("ECHO", "last"), client.execute_packed([]))

    first, packed, last, none = run(scenario())
    assert (first, last, none) == (b"first", b"last", [])
    assert packed == [[b"1", b"2"], [None, None], [b"3"]]


def test_an_error_among_commands_sent_together_fails_the_call_after_every_reply_is_read(redis_url):
    async def scenario():
        async with pipelined(redis_url) as client:
            await client.execute("SET", "pipelined:text", "abc")
            await client.execute("DEL", "pipelined:counter")
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await client.execute_many([("INCR", "pipelined:counter"), ("HGET", "pipelined:text", "a"),
                                           ("INCR", "pipelined:counter")])
            return await client.execute("ECHO", "next"), await client.execute("GET", "pipelined:counter")

    assert run(scenario()) == (b"next", b"2")  # in step, and the commands around the error ran


def test_a_caller_that_gives_up_on_commands_sent_together_leaves_the_connection_in_step(redis_url):
    async def scenario():
        async with pipelined(redis_url, stale_after_s=10) as client:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await client.execute_many([("ECHO", "before"), ("BLPOP", EMPTY_LIST, 0.3), ("ECHO", "after")])
            return await client.execute("ECHO", "next")

    assert run(scenario()) == b"next"


def test_a_caller_that_gives_up_leaves_the_connection_in_step(redis_url):
    async def scenario():
        async with pipelined(redis_url, stale_after_s=10) as client:
            connection_id = await client.execute("CLIENT", "ID")
            await give_up_on_blocked_call(client, after_s=0.05, blocks_s=0.3)
            echoed = await client.execute("ECHO", "next")  # answered after BLPOP's own (dropped) reply
            return connection_id, echoed, await client.execute("CLIENT", "ID")

    before, echoed, after = run(scenario())
    assert echoed == b"next"
    assert after == before  # same connection


def test_a_connection_that_stops_answering_is_replaced(redis_url):
    async def scenario():
        async with pipelined(redis_url, stale_after_s=0.1) as client:
            connection_id = await client.execute("CLIENT", "ID")
            await give_up_on_blocked_call(client, after_s=0.2, blocks_s=2)
            started = time.monotonic()
            after = await client.execute("CLIENT", "ID")
            return connection_id, after, time.monotonic() - started

    before, after, waited_s = run(scenario())
    assert after != before  # a new connection, not queued behind the blocked one
    assert waited_s < 1.5


def test_when_a_stuck_connection_is_dropped_its_other_calls_time_out(redis_url):
    async def scenario():
        async with pipelined(redis_url, stale_after_s=0.1) as client:
            blocked = asyncio.ensure_future(client.execute("BLPOP", EMPTY_LIST, 2))
            await asyncio.sleep(0.01)
            queued = asyncio.ensure_future(client.execute("ECHO", "behind"))  # waits behind the BLPOP
            await asyncio.sleep(0.15)
            blocked.cancel()  # gives up on a call older than stale_after_s: the connection is dropped
            with pytest.raises(TimeoutError):  # a slow Redis, not a refused one (the gateway answers 504)
                await asyncio.wait_for(queued, 1)
            return await client.execute("ECHO", "fresh")

    assert run(scenario()) == b"fresh"


def test_a_value_that_cannot_be_sent_fails_before_it_is_queued(redis_url):
    async def scenario():
        async with pipelined(redis_url) as client:
            await client.execute("PING")
            with pytest.raises(DataError):  # refused as redis-py refuses it
                await client.execute("SET", "pipelined:none", None)
            return await asyncio.gather(*(client.execute("ECHO", f"v{i}") for i in range(50)))

    assert run(scenario()) == [f"v{i}".encode() for i in range(50)]


def test_a_killed_connection_fails_its_calls_and_the_next_call_reconnects(redis_url):
    async def scenario():
        admin = redis.Redis.from_url(redis_url)
        try:
            async with pipelined(redis_url, stale_after_s=10) as client:
                connection_id = await client.execute("CLIENT", "ID")
                blocked = asyncio.ensure_future(client.execute("BLPOP", EMPTY_LIST, 5))
                await asyncio.sleep(0.1)
                await asyncio.to_thread(admin.client_kill_filter, _id=connection_id)
                with pytest.raises(RedisConnectionError):
                    await asyncio.wait_for(blocked, 2)
                # the calls made as the new connection opens each get their own reply
                echoed = await asyncio.gather(*(client.execute("ECHO", f"after-{i}") for i in range(100)))
                return connection_id, await client.execute("CLIENT", "ID"), echoed
        finally:
            admin.close()

    before, after, echoed = run(scenario())
    assert after != before
    assert echoed == [f"after-{i}".encode() for i in range(100)]


def test_a_closed_client_refuses_calls(redis_url):
    async def scenario():
        async with pipelined(redis_url) as client:
            await client.execute("PING")
        with pytest.raises(RedisConnectionError, match="closed"):
            await client.execute("PING")

    run(scenario())


def test_a_refused_connection_fails_at_once():
    async def scenario():
        async with pipelined("redis://127.0.0.1:1/0") as client:
            started = time.monotonic()
            with pytest.raises((RedisConnectionError, OSError)):
                await client.execute("PING")
            return time.monotonic() - started

    assert run(scenario()) < 1


def test_calls_beyond_the_unanswered_bound_fail_at_once(redis_url):
    async def scenario():
        async with pipelined(redis_url, stale_after_s=10, max_pending=2) as client:
            await client.execute("PING")
            blocked = [asyncio.ensure_future(client.execute("BLPOP", EMPTY_LIST, 0.2)) for _ in range(2)]
            await asyncio.sleep(0.05)
            with pytest.raises(RedisConnectionError, match="unanswered"):
                await client.execute("PING")
            await asyncio.gather(*blocked)
            return await client.execute("PING")

    assert run(scenario()) == b"PONG"


def test_error_replies_are_redis_pys_own_exception_classes(redis_url):
    async def scenario():
        async with pipelined(redis_url) as client:
            with pytest.raises(NoScriptError):
                await client.execute("EVALSHA", "0" * 40, 0)
            with pytest.raises(ResponseError) as unknown:
                await client.execute("NOSUCHCOMMAND")
            return unknown.value, await client.execute("ECHO", "still in step")

    error, echoed = run(scenario())
    assert not str(error).startswith("ERR ") and echoed == b"still in step"


def test_a_resp3_url_is_refused_before_connecting(redis_url):
    with pytest.raises(ValueError, match="RESP2"):
        PipelinedRedis(f"{redis_url}?protocol=3", connect_timeout_s=1, stale_after_s=1)


def test_an_opening_nobody_waits_for_any_more_fails_quietly():
    """A caller that gives up while the connection opens (a Redis that accepts and never answers) leaves the
    opening's failure read: asyncio reports nothing as never retrieved when the task is collected."""
    async def scenario() -> list[dict]:
        reported: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
        silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
        client = PipelinedRedis(f"redis://127.0.0.1:{silent.sockets[0].getsockname()[1]}/0", connect_timeout_s=0.2,
                                stale_after_s=0.2)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await client.execute("PING")
        await asyncio.sleep(0.4)  # the opening times out with nobody waiting
        await client.aclose()
        silent.close()
        del client  # the last reference to the opening task
        gc.collect()
        await asyncio.sleep(0)
        return reported

    assert run(scenario()) == []


def test_a_script_is_run_by_its_sha_and_sent_again_when_redis_lost_it(redis_url):
    script = Script("return {KEYS[1], ARGV[1]}")
    assert script.sha == redis.Redis.from_url(redis_url).script_load(script.source)

    async def scenario() -> list:
        async with pipelined(redis_url) as client:
            first = await client.run_script(script, [b"k"], [b"v"])
            await client.execute("SCRIPT", "FLUSH")  # as a restarted Redis would have lost it
            again = await client.run_script(script, [b"k2"], [7])
            kept = await client.execute("SCRIPT", "EXISTS", script.sha)
            return [first, again, kept]

    assert run(scenario()) == [[b"k", b"v"], [b"k2", b"7"], [1]]
