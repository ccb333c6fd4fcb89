"""Predict requests answered below ASGI by the gateway's HTTP protocol: the same HTTP/1.1 as uvicorn's, on raw sockets.

Which requests it takes is :meth:`PredictFrontDoor.direct`'s decision (unit-tested below); the others go through
the app, and every answer, either way, must read the same to a client.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

import httptools
import orjson
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.testclient import TestClient
from uvicorn.config import Config
from uvicorn.server import ServerState

from services.common.schemas import Variant
from services.gateway import api
from services.gateway import app as app_module
from services.gateway.app import create_app
from services.gateway.busy_poll import BusyPoll
from services.gateway.hot_path import FRONT_DOOR_STATE, PredictFrontDoor
from services.gateway.http_protocol import CoalescingHttpToolsProtocol
from services.gateway.metrics import GatewayMetrics
from services.gateway.predictions import PredictAnswer
from services.gateway.resources import Gateway
from services.gateway.settings import GatewaySettings
from tests.gateway.conftest import MODEL
from tests.gateway.test_busy_poll import AWAKE_TURNS, counted

BODY = orjson.dumps({"instances": [{"user_id": 7, "amount": 10.0}]})
PATH = f"/v1/models/{MODEL}/predict"


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class Responses:
    """Responses parsed, in order, from whatever a connection returns."""

    def __init__(self) -> None:
        self.done: list[Response] = []
        self._current = Response()
        self._parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._current.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._current.body += body

    def on_message_complete(self) -> None:
        self._current.status = self._parser.get_status_code()
        self.done.append(self._current)
        self._current = Response()

    def feed(self, data: bytes) -> None:
        self._parser.feed_data(data)


def request(path: str = PATH, *, body: bytes = BODY, request_id: str = "raw-1", version: str = "1.1",
            extra: str = "") -> bytes:
    return (f"POST {path} HTTP/{version}\r\nHost: gateway\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-Id: {request_id}\r\n{extra}\r\n").encode() + body


def read_responses(conn: socket.socket, count: int) -> list[Response]:
    """``count`` responses from ``conn``."""
    parsed = Responses()
    while len(parsed.done) < count:
        data = conn.recv(65536)
        assert data, f"the connection closed after {len(parsed.done)} of {count} responses"
        parsed.feed(data)
    return parsed.done


def closed_by_the_gateway(conn: socket.socket, wait_s: float = 0.3) -> bool:
    """Whether the gateway closes ``conn`` (nothing more to read) within ``wait_s``."""
    conn.settimeout(wait_s)
    try:
        return conn.recv(1) == b""
    except TimeoutError:
        return False
    finally:
        conn.settimeout(30)


@pytest.fixture
def connect(fleet):
    opened: list[socket.socket] = []

    def connect() -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", fleet.gateway.port), timeout=30)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


def test_pipelined_predictions_are_answered_in_order_and_the_connection_stays_open(connect):
    conn = connect()
    conn.sendall(request(request_id="first") + request(request_id="second") + request(request_id="third"))
    answers = read_responses(conn, 3)
    assert [a.status for a in answers] == [200, 200, 200], [a.body for a in answers]
    assert [a.headers["x-request-id"] for a in answers] == ["first", "second", "third"]
    assert [orjson.loads(a.body)["request_id"] for a in answers] == ["first", "second", "third"]
    assert not closed_by_the_gateway(conn)
    conn.sendall(request(request_id="after"))
    (after,) = read_responses(conn, 1)
    assert after.status == 200 and after.headers["x-request-id"] == "after"


@pytest.mark.parametrize(("version", "extra"), [("1.1", "Connection: close\r\n"), ("1.0", "")])
def test_a_connection_the_client_does_not_keep_is_closed_after_its_answer(connect, version, extra):
    conn = connect()
    conn.sendall(request(version=version, extra=extra))
    (answer,) = read_responses(conn, 1)
    assert answer.status == 200, answer.body
    assert answer.headers["connection"] == "close"
    assert closed_by_the_gateway(conn, wait_s=5)


def test_answers_below_asgi_and_through_the_app_carry_the_same_headers(connect):
    """A query string sends the request through the app (and its ASGI front door); the answers must not differ but
    in their ids and dates."""
    conn = connect()
    conn.sendall(request(request_id="direct") + request(f"{PATH}?through=app", request_id="through-app"))
    (direct, through_app) = read_responses(conn, 2)
    assert direct.status == through_app.status == 200
    assert direct.headers.keys() == through_app.headers.keys()
    varying = {"x-request-id", "x-trace-id", "date", "content-length"}
    assert {k: v for k, v in direct.headers.items() if k not in varying} == \
        {k: v for k, v in through_app.headers.items() if k not in varying}
    assert orjson.loads(direct.body).keys() == orjson.loads(through_app.body).keys()


def test_problems_below_asgi_are_the_routes_problems(connect):
    conn = connect()
    conn.sendall(request(body=b"{", request_id="broken") + request(f"{PATH}?through=app", body=b"{", request_id="broken-app"))
    (direct, through_app) = read_responses(conn, 2)
    assert direct.status == through_app.status == 400
    assert direct.headers["content-type"] == through_app.headers["content-type"] == "application/problem+json"
    assert direct.headers["x-request-id"] == "broken"
    assert orjson.loads(direct.body)["instance"] == PATH


def test_a_request_expecting_100_continue_and_a_chunked_body_are_still_answered(connect):
    conn = connect()
    conn.sendall(f"POST {PATH} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(BODY)}\r\nExpect: 100-continue\r\n\r\n".encode())
    assert conn.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n")
    conn.sendall(BODY)
    (expected,) = read_responses(conn, 1)
    chunked = (f"POST {PATH} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
               f"Transfer-Encoding: chunked\r\n\r\n{len(BODY):x}\r\n").encode() + BODY + b"\r\n0\r\n\r\n"
    conn.sendall(chunked)
    (chunked_answer,) = read_responses(conn, 1)
    assert expected.status == chunked_answer.status == 200, (expected.body, chunked_answer.body)


def test_a_client_gone_mid_body_leaves_the_gateway_serving(connect):
    cut = connect()
    cut.sendall(request(body=b" " * 5000)[:-4000])
    cut.close()
    conn = connect()
    conn.sendall(request(request_id="next"))
    (answer,) = read_responses(conn, 1)
    assert answer.status == 200 and answer.headers["x-request-id"] == "next"


class FakeSettings:
    max_body_bytes = 1000


@pytest.mark.parametrize(("method", "url", "headers", "taken"), [
    (b"POST", b"/v1/models/m/predict", [(b"content-length", b"10")], True),
    (b"GET", b"/v1/models/m/predict", [(b"content-length", b"10")], False),
    (b"POST", b"/v1/models/m/predict?x=1", [(b"content-length", b"10")], False),
    (b"POST", b"/v1/models/m%2Fx/predict", [(b"content-length", b"10")], False),
    (b"POST", b"/v1/models/m/explain", [(b"content-length", b"10")], False),
    (b"POST", b"/v1/models/m/predict", [], False),
    (b"POST", b"/v1/models/m/predict", [(b"content-length", b"1001")], False),
    (b"POST", b"/v1/models/m/predict", [(b"content-length", b"10"), (b"origin", b"https://x")], False),
    (b"POST", b"/v1/models/m/predict", [(b"content-length", b"10"), (b"expect", b"100-continue")], False),
    (b"POST", b"/v1/models/m/predict", [(b"transfer-encoding", b"chunked")], False),
    (b"POST", b"/v1/models/m#/predict", [(b"content-length", b"10")], False),
    (b"POST", b"/v1/models/m/predict", [(b"content-length", b"10"), (b"upgrade", b"websocket")], False),
])
def test_the_protocol_takes_only_plain_predict_requests(method, url, headers, taken):
    door = PredictFrontDoor(traced=lambda: False)
    assert door.direct(method, url, headers) is None, "no gateway yet: nothing is taken"
    door.gateway = InProcessGateway()  # type: ignore[assignment]
    direct = door.direct(method, url, headers)
    assert (direct is not None) == taken
    if taken:
        assert direct == ("m", {"content-length": "10"})
    assert PredictFrontDoor(traced=lambda: True).direct(method, url, headers) is None


class RecordingPredictor:
    def __init__(self) -> None:
        self.models: list[str] = []

    async def predict(self, model, request, ctx, *, pinned_version=None) -> PredictAnswer:
        self.models.append(model)
        return PredictAnswer(model, 1, Variant.stable, [], ctx.request_id, ctx.trace_id)


class InProcessGateway:
    """What :func:`predict_reply` uses of a gateway, around a predictor that records its calls."""

    def __init__(self, *, busy_poll_s: float = 0.0) -> None:
        self.settings = FakeSettings()
        self.predictor = RecordingPredictor()
        self.metrics = GatewayMetrics.create(CollectorRegistry())
        self.busy_poll = BusyPoll(grace_s=busy_poll_s)


class InProcessServer:
    """The gateway's protocol on a port of its own in this process, with an ASGI app that only records its calls
    (answering 418) and a front door over :class:`InProcessGateway`."""

    def __init__(self, *, busy_poll_s: float = 0.0, **config) -> None:
        self.app_calls: list[str] = []
        self.gateway = InProcessGateway(busy_poll_s=busy_poll_s)
        self.door = PredictFrontDoor(traced=lambda: False)
        self.door.gateway = self.gateway  # type: ignore[assignment]
        self.state = ServerState()
        self.config = Config(self.app, interface="asgi3", lifespan="off", log_config=None, **config)
        self.config.load()

    async def app(self, scope, receive, send) -> None:
        self.app_calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 418, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def listen(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: CoalescingHttpToolsProtocol(self.config, self.state, {FRONT_DOOR_STATE: self.door}, _loop=loop),
            "127.0.0.1", 0)

    async def exchange(self, data: bytes, count: int) -> list[Response]:
        """Send ``data`` on a new connection and read ``count`` responses."""
        server = await self.listen()
        try:
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
            writer.write(data)
            parsed = Responses()
            while len(parsed.done) < count:
                parsed.feed(await asyncio.wait_for(reader.read(65536), 10))
            writer.close()
            for _ in range(200):  # the connection's request tasks end once it closes
                if not self.state.tasks:
                    break
                await asyncio.sleep(0.01)
            return parsed.done
        finally:
            server.close()


def test_the_protocol_answers_a_plain_predict_request_without_calling_the_app():
    server = InProcessServer()
    plain, through_app = asyncio.run(server.exchange(request("/v1/models/m/predict") + request("/v1/models/m/predict?q=1"), 2))
    assert plain.status == 200 and orjson.loads(plain.body)["model"] == "m"
    assert plain.headers["x-request-id"] == "raw-1" and plain.headers["x-content-type-options"] == "nosniff"
    assert server.gateway.predictor.models == ["m"], "the plain request was answered by the predictor"
    assert through_app.status == 418 and server.app_calls == ["/v1/models/m/predict"], "the other went through the app"
    assert server.gateway.metrics.predict_responses_by_status("200")._value.get() == 1
    assert not server.state.tasks


def test_a_busy_polling_gateway_answers_the_same_and_stops_polling_after_its_grace():
    server = InProcessServer(busy_poll_s=1.0)

    async def scenario() -> tuple[list[Response], bool, bool]:
        answers = await server.exchange(request("/v1/models/m/predict") * 3, 3)
        polled = server.gateway.busy_poll.polling  # within the grace after the last answer
        await asyncio.sleep(1.2)
        return answers, polled, server.gateway.busy_poll.polling

    answers, polled_after_answers, polled_later = asyncio.run(scenario())
    assert [a.status for a in answers] == [200, 200, 200] and server.gateway.predictor.models == ["m"] * 3
    assert polled_after_answers and not polled_later


def test_a_predict_request_answered_through_the_app_is_busy_polled_too():
    """A cross-origin call (or any request while tracing is on) is answered by the route in the app, not below ASGI;
    it keeps the loop awake the same way."""
    gateway = InProcessGateway(busy_poll_s=0.5)
    turns = counted(gateway.busy_poll)
    app = Starlette(routes=[api.predict_route()])
    app.state.gateway = gateway
    with TestClient(app) as client:
        answer = client.post("/v1/models/m/predict", content=BODY,
                             headers={"content-type": "application/json", "origin": "https://example.com"})
        time.sleep(0.05)  # within the grace: the app's loop, in the client's thread, keeps polling
    assert answer.status_code == 200 and gateway.predictor.models == ["m"]
    assert turns[0] >= AWAKE_TURNS


def test_with_uvicorns_concurrency_limit_every_request_goes_through_uvicorn():
    server = InProcessServer(limit_concurrency=100)
    (answer,) = asyncio.run(server.exchange(request("/v1/models/m/predict"), 1))
    assert answer.status == 418 and server.app_calls == ["/v1/models/m/predict"]
    assert server.gateway.predictor.models == []


def test_a_client_gone_mid_body_ends_its_request_unanswered_and_unpredicted():
    server = InProcessServer()

    async def cut_then_plain() -> list[Response]:
        await server.exchange(request("/v1/models/m/predict", body=b" " * 5000)[:-4000], 0)
        return await server.exchange(request("/v1/models/m/predict", request_id="next"), 1)

    (answer,) = asyncio.run(cut_then_plain())
    assert answer.status == 200 and answer.headers["x-request-id"] == "next"
    assert server.gateway.predictor.models == ["m"], "only the complete request was predicted"
    assert not server.state.tasks, "the cut request's task ended"


def test_the_gateways_lifespan_hands_its_front_door_to_the_protocol(monkeypatch, tmp_path):
    """The wiring the fleet tests above rely on: without the lifespan state, every request would go through the app
    and they would still pass."""
    class Opened(InProcessGateway):
        redis = None
        closed = False

        async def close(self) -> None:
            self.closed = True

    opened = Opened()

    async def open_gateway(*args, **kwargs):
        return opened

    monkeypatch.setattr(Gateway, "open", open_gateway)
    monkeypatch.setattr(app_module, "freeze_startup_heap", lambda: None)
    app = create_app(GatewaySettings(home=tmp_path))

    async def lifespan_state():
        async with app.router.lifespan_context(app) as state:
            return state

    state = asyncio.run(lifespan_state())
    assert state[FRONT_DOOR_STATE] is app.front_door
    assert app.front_door.gateway is opened and opened.closed


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout_and_a_busy_one_is_not():
    server = InProcessServer(timeout_keep_alive=0.3)

    async def scenario() -> tuple[float, int, bool]:
        listening = await server.listen()
        try:
            host, port = listening.sockets[0].getsockname()[:2]
            reader, writer = await asyncio.open_connection(host, port)
            answered = 0
            for round_ in range(8):  # busy for ~0.8 s, more than twice the timeout, never idle for a whole one
                if round_:
                    await asyncio.sleep(0.1)
                writer.write(request("/v1/models/m/predict"))
                parsed = Responses()
                while not parsed.done:
                    parsed.feed(await asyncio.wait_for(reader.read(65536), 10))
                answered += parsed.done[0].status == 200
            idle_from = time.monotonic()
            still_open = not reader.at_eof()
            assert await asyncio.wait_for(reader.read(65536), 5) == b"", "closed, with nothing more sent"
            writer.close()
            return time.monotonic() - idle_from, answered, still_open
        finally:
            listening.close()

    idle_for, answered, still_open = asyncio.run(scenario())
    assert answered == 8 and still_open
    assert 0.2 <= idle_for < 1.0, idle_for  # the timeout is 0.3 s from the last answer's write
