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
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from services.gateway.hot_path import (FRONT_DOOR_STATE, SECURITY_HEAD, PredictFrontDoor, Reply, own_headers,
                                       predict_reply)
from services.gateway.resources import Gateway

logger = logging.getLogger("mlfleet.gateway.http")


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
    """uvicorn's protocol with :class:`CoalescingTransport`, answering predict requests below ASGI when it can.

    Once a request's headers have arrived, the app's :class:`~services.gateway.hot_path.PredictFrontDoor` (from the
    lifespan state) says whether it takes it; if so the request's cycle is a :class:`PredictCycle` instead of
    uvicorn's ``RequestResponseCycle``, and everything else (pipelining, keep-alive, flow control, shutdown) stays
    uvicorn's, which sees the same cycle interface."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_headers_complete(self) -> None:
        door: PredictFrontDoor | None = self.app_state.get(FRONT_DOOR_STATE)
        http_version = self.parser.get_http_version()
        direct = None
        # uvicorn's concurrency limit (off unless --limit-concurrency) is applied by its own path only
        if (door is not None and http_version in ("1.1", "1.0") and not self.parser.should_upgrade()
                and self.limit_concurrency is None):
            direct = door.direct(self.parser.get_method(), self.url, self.headers)
        if direct is None:
            super().on_headers_complete()
            return
        model, headers = direct
        existing = self.cycle
        self.cycle = PredictCycle(  # type: ignore[assignment]
            door.gateway, self.url.decode("latin-1"), model, headers, transport=self.transport, flow=self.flow,
            default_headers=self.server_state.default_headers, on_response=self.on_response_complete,
            keep_alive=http_version == "1.1" and self.parser.should_keep_alive())
        if existing is None or existing.response_complete:
            self._start_asgi_task(self.cycle, self.app)
        else:  # pipelined behind a request still being answered: uvicorn starts it after that one
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, self.app))


class PredictCycle:
    """One predict request answered by the protocol itself: the body is gathered as uvicorn's cycle gathers it,
    the answer comes from :func:`~services.gateway.hot_path.predict_reply` (the same as the ASGI front door's) and
    goes out in one write, status line and headers written here rather than by uvicorn's ``send``.

    Against uvicorn's cycle behind the ASGI front door, this skips the request's ASGI scope and messages, the proxy
    headers middleware, and ``send``'s checks of every header an answer carries (ours are fixed or checked where
    made): a bare ASGI answer cost ~77 µs of CPU in uvicorn here against ~23 µs from a protocol of its own. Nor is
    it access-logged: the gateway runs with ``--no-access-log``, and counts its answers in
    ``mlfleet_gateway_predict_responses_total``."""

    def __init__(self, gateway: Gateway, path: str, model: str, headers: dict[str, str], *, transport: asyncio.Transport,
                 flow: FlowControl, default_headers: list[tuple[bytes, bytes]], on_response: Callable[[], None],
                 keep_alive: bool) -> None:
        self.gateway, self.path, self.model, self.headers = gateway, path, model, headers
        self.transport, self.flow, self.default_headers, self.on_response = transport, flow, default_headers, on_response
        self.keep_alive = keep_alive
        self.message_event = asyncio.Event()
        self.disconnected = False
        self.body = bytearray()
        self.more_body = True
        self.response_complete = False

    async def run_asgi(self, app: object) -> None:
        """uvicorn's name for running the request; ``app`` is not called."""
        try:
            while self.more_body and not self.disconnected:
                self.flow.resume_reading()
                await self.message_event.wait()
                self.message_event.clear()
            if self.disconnected:
                return
            reply = await predict_reply(self.gateway, self.path, self.model, self.headers, bytes(self.body))
            if self.flow.write_paused and not self.disconnected:
                await self.flow.drain()  # a client not reading its answers stops being read (uvicorn's send does this)
            if not self.disconnected:
                self._write(reply)
        except asyncio.CancelledError:
            self.transport.close()
            raise
        except Exception:  # predict_reply answers every error itself: this is a failed write, nothing to answer with
            logger.exception("could not answer POST %s", self.path)
            self.transport.close()
        finally:
            self.on_response = lambda: None

    def _write(self, reply: Reply) -> None:
        head = [STATUS_LINE[reply.status]]
        for name, value in (*self.default_headers, *own_headers(reply)):
            head += (name, b": ", value, b"\r\n")
        head.append(SECURITY_HEAD)
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head += (b"\r\n", reply.body)
        self.transport.write(b"".join(head))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()
