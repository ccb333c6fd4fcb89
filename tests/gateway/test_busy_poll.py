"""Busy polling keeps the gateway's event loop from sleeping while requests are in flight, and only then.

Whether a loop sleeps shows in the CPU time its process spends over a wait: a loop that polls spends about all of
it, one that sleeps in ``epoll_wait`` next to none. The bounds below are far apart on purpose (the machine is
shared): a polling loop must spend more than a fifth of the wait, a sleeping one less than a twentieth.
"""

from __future__ import annotations

import asyncio
import time

from services.gateway.busy_poll import BusyPoll

WAIT_S = 0.2


async def cpu_share_of_a_wait() -> float:
    """The share of ``WAIT_S`` of wall time this process spends on its CPU while its loop waits."""
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.sleep(WAIT_S)
    return (time.process_time() - cpu) / (time.monotonic() - wall)


def test_the_loop_polls_while_a_request_is_in_flight_and_sleeps_after_the_grace():
    busy_poll = BusyPoll(grace_s=0.05)

    async def scenario() -> tuple[float, bool, float, bool]:
        busy_poll.begin()
        in_flight = await cpu_share_of_a_wait()
        busy_poll.end()
        polling_in_grace = busy_poll.polling
        await asyncio.sleep(0.1)  # the grace runs out
        return in_flight, polling_in_grace, await cpu_share_of_a_wait(), busy_poll.polling

    in_flight, polling_in_grace, after_grace, polling_after = asyncio.run(scenario())
    assert in_flight > 0.2, f"the loop slept while a request was in flight ({in_flight:.0%} of a core)"
    assert polling_in_grace and not polling_after
    assert after_grace < 0.05, f"the loop kept polling with nothing in flight ({after_grace:.0%} of a core)"


def test_it_polls_until_the_last_of_several_requests_is_answered():
    busy_poll = BusyPoll(grace_s=0.01)

    async def scenario() -> list[bool]:
        seen = []
        busy_poll.begin()
        busy_poll.begin()
        busy_poll.end()
        await asyncio.sleep(0.05)  # past the grace, but one request is still in flight
        seen.append(busy_poll.polling)
        busy_poll.end()
        await asyncio.sleep(0.05)
        seen.append(busy_poll.polling)
        return seen

    assert asyncio.run(scenario()) == [True, False]


def test_off_it_never_polls():
    busy_poll = BusyPoll(grace_s=0)

    async def scenario() -> tuple[float, bool]:
        busy_poll.begin()
        share = await cpu_share_of_a_wait()
        polling = busy_poll.polling
        busy_poll.end()
        return share, polling

    share, polling = asyncio.run(scenario())
    assert not busy_poll.enabled and not polling
    assert share < 0.05


def test_a_closed_busy_poll_stops_polling_with_requests_still_in_flight_and_starts_no_more():
    busy_poll = BusyPoll(grace_s=1.0)

    async def scenario() -> tuple[bool, bool, float]:
        busy_poll.begin()
        await asyncio.sleep(0.01)
        busy_poll.close()  # a shutting-down gateway: its last requests are still being answered
        await asyncio.sleep(0.01)
        stopped = not busy_poll.polling
        busy_poll.begin()  # one more request arrives during the shutdown
        restarted = busy_poll.polling
        share = await cpu_share_of_a_wait()
        busy_poll.end()
        busy_poll.end()
        return stopped, restarted, share

    stopped, restarted, share = asyncio.run(scenario())
    assert stopped and not restarted
    assert share < 0.05
