"""Busy polling keeps the gateway's event loop from sleeping while requests are in flight, and only then.

A loop kept awake runs the poller once per turn, thousands of turns in a few milliseconds; a sleeping loop runs it
not at all. So the tests count the poller's turns (wrapping it) rather than time anything.
"""

from __future__ import annotations

import asyncio

from services.gateway.busy_poll import BusyPoll

AWAKE_TURNS = 50
"""Turns a kept-awake loop runs in 20 ms, at the least (a turn is a few µs: even a loaded machine runs hundreds)."""


def counted(busy_poll: BusyPoll) -> list[int]:
    """A counter of the poller's turns (the instance's own ``_poll`` is what it schedules)."""
    turns = [0]
    poll = busy_poll._poll

    def counting() -> None:
        turns[0] += 1
        poll()

    busy_poll._poll = counting  # type: ignore[method-assign]
    return turns


async def turns_during(turns: list[int], seconds: float) -> int:
    before = turns[0]
    await asyncio.sleep(seconds)
    return turns[0] - before


def test_the_loop_polls_while_a_request_is_in_flight_and_through_the_grace_then_sleeps():
    busy_poll = BusyPoll(grace_s=0.3)
    turns = counted(busy_poll)

    async def scenario() -> tuple[int, int, bool, int]:
        with busy_poll:
            in_flight = await turns_during(turns, 0.02)
        in_grace = await turns_during(turns, 0.02)
        await asyncio.sleep(0.4)  # the grace runs out
        return in_flight, in_grace, busy_poll.polling, await turns_during(turns, 0.05)

    in_flight, in_grace, polling_after, after_grace = asyncio.run(scenario())
    assert in_flight >= AWAKE_TURNS, f"the loop slept while a request was in flight ({in_flight} turns)"
    assert in_grace >= AWAKE_TURNS, f"the loop slept within the grace ({in_grace} turns)"
    assert not polling_after and after_grace == 0


def test_it_polls_until_the_last_of_several_requests_is_answered():
    busy_poll = BusyPoll(grace_s=0.01)
    turns = counted(busy_poll)

    async def scenario() -> tuple[int, int]:
        busy_poll.begin()
        busy_poll.begin()
        busy_poll.end()
        await asyncio.sleep(0.05)  # past the grace, but one request is still in flight
        one_left = await turns_during(turns, 0.02)
        busy_poll.end()
        await asyncio.sleep(0.05)
        return one_left, await turns_during(turns, 0.02)

    one_left, none_left = asyncio.run(scenario())
    assert one_left >= AWAKE_TURNS and none_left == 0


def test_off_it_never_polls():
    busy_poll = BusyPoll(grace_s=0)
    turns = counted(busy_poll)

    async def scenario() -> bool:
        with busy_poll:
            await asyncio.sleep(0.02)
            return busy_poll.polling

    assert not asyncio.run(scenario()) and turns == [0] and not busy_poll.enabled


def test_a_closed_busy_poll_stops_polling_with_requests_still_in_flight_and_starts_no_more():
    busy_poll = BusyPoll(grace_s=1.0)
    turns = counted(busy_poll)

    async def scenario() -> tuple[int, bool, int]:
        busy_poll.begin()
        before_close = await turns_during(turns, 0.02)
        busy_poll.close()  # a shutting-down gateway: its last requests are still being answered
        await asyncio.sleep(0.01)
        with busy_poll:  # one more request arrives during the shutdown
            restarted = busy_poll.polling
            after_close = await turns_during(turns, 0.02)
        busy_poll.end()
        return before_close, restarted, after_close

    before_close, restarted, after_close = asyncio.run(scenario())
    assert before_close >= AWAKE_TURNS
    assert not restarted and after_close == 0


def test_an_end_without_its_begin_changes_nothing():
    busy_poll = BusyPoll(grace_s=0.01)
    turns = counted(busy_poll)

    async def scenario() -> tuple[int, int]:
        with busy_poll:
            await asyncio.sleep(0)
        busy_poll.end()  # a caller's mistake, which must not leave the count below zero
        await asyncio.sleep(0.05)
        idle = await turns_during(turns, 0.02)
        with busy_poll:  # the next request is polled for as any
            in_flight = await turns_during(turns, 0.02)
        return idle, in_flight

    idle, in_flight = asyncio.run(scenario())
    assert idle == 0 and in_flight >= AWAKE_TURNS
