"""uvicorn's httptools protocol, with each response's writes sent in one system call.

An ASGI response is two messages (``http.response.start``, then the body), and uvicorn writes
each to the socket at once: two ``write`` calls per answer. On this machine a ``write`` on a
loopback socket cost about 30 µs, so the status line and headers alone took about a tenth of
the gateway's CPU under load (py-spy, 64 connections). :class:`CoalescingTransport` holds what
is written during one turn of the event loop and writes it together at the end of that turn.

The transport's flow control (``pause_writing``) sees the data only when it is flushed, at the
end of the turn: a response body produced in many writes without yielding is buffered whole, as
an unpaused transport would too.

The gateway's launch command selects it: ``uvicorn --http services.gateway.http_protocol:
CoalescingHttpToolsProtocol``. Without it the gateway works the same, only slower.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """Forwards everything to ``transport``, except that writes are joined until the loop's next turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, chunks: list[bytes]) -> None:
        self.write(b"".join(chunks))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
