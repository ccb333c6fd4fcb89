"""The gateway's transport wrapper: one write per turn of the event loop, everything else forwarded."""

from __future__ import annotations

import asyncio

from services.gateway.http_protocol import CoalescingTransport


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_writes_of_one_turn_leave_in_one_write():
    async def run() -> list[bytes]:
        real = RecordingTransport()
        transport = CoalescingTransport(real, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"body")
        assert real.writes == []
        await asyncio.sleep(0)
        transport.write(b"next")
        await asyncio.sleep(0)
        return real.writes

    assert asyncio.run(run()) == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"next"]


def test_close_sends_what_is_pending_first_and_other_calls_are_forwarded():
    async def run() -> RecordingTransport:
        real = RecordingTransport()
        transport = CoalescingTransport(real, asyncio.get_running_loop())
        assert transport.get_extra_info("peername") == "info:peername"
        transport.write(b"last words")
        transport.close()
        await asyncio.sleep(0)
        return real

    real = asyncio.run(run())
    assert real.writes == [b"last words"] and real.closed
