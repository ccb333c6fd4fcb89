"""The gateway's Triton client: request and answer encoding, and its connection handling against a scripted
HTTP server on a real socket (the real Triton is exercised by the gateway's integration tests)."""

from __future__ import annotations

import asyncio

import httptools
import numpy as np
import orjson
import pytest

from services.common.errors import BackendUnavailable, InferenceFailed
from services.gateway.triton import TritonInference, infer_request, output_tensor, triton_address

ROWS = np.array([[1.5, -2.0, 3.25], [0.0, 4.0, 8.0]], dtype=np.float32)
PROBABILITIES = np.array([[0.25, 0.75], [0.9, 0.1]], dtype=np.float32)


def binary_answer(outputs: dict[str, np.ndarray], datatypes: dict[str, str]) -> tuple[bytes, int]:
    header = orjson.dumps({"model_name": "m", "outputs": [
        {"name": name, "datatype": datatypes[name], "shape": list(array.shape),
         "parameters": {"binary_data_size": array.nbytes}} for name, array in outputs.items()]})
    return header + b"".join(array.tobytes() for array in outputs.values()), len(header)


def test_request_carries_the_tensor_as_raw_bytes_after_its_json_header():
    request = infer_request("triton:8000", "fraud", 3, ROWS, "probabilities", {"traceparent": "00-ab-cd-01"})
    parsed: dict = {"headers": {}, "body": b""}

    class Sink:
        def on_url(self, url: bytes) -> None:
            parsed["url"] = url

        def on_header(self, name: bytes, value: bytes) -> None:
            parsed["headers"][name.lower()] = value

        def on_body(self, body: bytes) -> None:
            parsed["body"] += body

    httptools.HttpRequestParser(Sink()).feed_data(request)
    assert parsed["url"] == b"/v2/models/fraud/versions/3/infer"
    assert parsed["headers"][b"traceparent"] == b"00-ab-cd-01"
    length = int(parsed["headers"][b"inference-header-content-length"])
    header = orjson.loads(parsed["body"][:length])
    assert header["inputs"][0]["shape"] == [2, 3] and header["inputs"][0]["parameters"]["binary_data_size"] == 24
    assert header["outputs"] == [{"name": "probabilities", "parameters": {"binary_data": True}}]
    np.testing.assert_array_equal(np.frombuffer(parsed["body"][length:], dtype=np.float32).reshape(2, 3), ROWS)


def test_the_named_output_is_found_after_the_others_bytes():
    labels = np.array([1, 0], dtype=np.int64)
    body, length = binary_answer({"label": labels, "probabilities": PROBABILITIES},
                                 {"label": "INT64", "probabilities": "FP32"})
    np.testing.assert_array_equal(output_tensor(body, length, "probabilities"), PROBABILITIES)
    np.testing.assert_array_equal(output_tensor(body, length, "label"), labels)
    assert output_tensor(body, length, "missing") is None


def test_json_outputs_are_read_too():
    body = orjson.dumps({"outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [2, 2],
                                      "data": PROBABILITIES.ravel().tolist()}]})
    np.testing.assert_array_equal(output_tensor(body, None, "probabilities"), PROBABILITIES)


DROP = "drop"


class ScriptedTriton:
    """An HTTP server on a real socket that answers each connection's requests from ``script``: ``(status, body,
    then_close)`` per request, in order; ``None`` means never answer, ``DROP`` close without answering, and bytes
    are sent as they are before closing."""

    def __init__(self, script: list[tuple[int, bytes, bool] | bytes | str | None]) -> None:
        self.script = list(script)
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while self.script:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            step = self.script.pop(0)
            if step is None:
                await asyncio.sleep(30)
                return
            if step == DROP:
                writer.close()
                return
            if isinstance(step, bytes):
                writer.write(step)
                await writer.drain()
                writer.close()
                return
            status, body, then_close = step
            extra = b"" if status != 200 else b"Inference-Header-Content-Length: %d\r\n" % (body.index(b"}]}") + 3)
            writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s" % (status, len(body), extra, body))
            await writer.drain()
            if then_close:
                writer.close()
                return


def ok_answer() -> bytes:
    return binary_answer({"probabilities": PROBABILITIES}, {"probabilities": "FP32"})[0]


def infer(url: str, calls: int = 1, timeout_s: float = 2.0) -> list[np.ndarray]:
    async def run() -> list[np.ndarray]:
        client = TritonInference(url, timeout_s=timeout_s, max_batch_rows=64)
        try:
            return [await client.infer("m", 1, ROWS, output="probabilities") for _ in range(calls)]
        finally:
            await client.close()
    return asyncio.run(run())


def infer_with_early(status: int, body: bytes, early) -> tuple[list[str], np.ndarray | Exception]:
    """One call with an ``early`` hook against a scripted Triton: the order in which the hook and the call's return
    happened, and what the call returned or raised."""
    async def run():
        events: list[str] = []
        async with ScriptedTriton([(status, body, False)]) as url:
            client = TritonInference(url, timeout_s=2, max_batch_rows=64)

            def hook(probabilities: np.ndarray) -> None:
                events.append("early" if asyncio.current_task() is None else "early, from a task")
                early(probabilities)

            try:
                outcome = await client.infer("m", 1, ROWS, output="probabilities", early=hook)
            except Exception as exc:
                outcome = exc
            finally:
                await client.close()
            events.append("returned")
        return events, outcome

    return asyncio.run(run())


def calls_against(script: list, calls: int) -> tuple[int, list[np.ndarray | Exception]]:
    """``calls`` calls in turn on one client against a scripted Triton: the connections it saw, and each call's
    answer or error."""
    async def run():
        triton = ScriptedTriton(script)
        async with triton as url:
            client = TritonInference(url, timeout_s=2, max_batch_rows=64)
            outcomes = []
            for _ in range(calls):
                try:
                    outcomes.append(await client.infer("m", 1, ROWS, output="probabilities"))
                except Exception as exc:
                    outcomes.append(exc)
            await client.close()
        return triton.connections, outcomes

    return asyncio.run(run())


def two_calls(close_after_first: bool) -> tuple[int, list[np.ndarray]]:
    """Two calls against a scripted Triton that may close the connection after its first answer; the connections it
    saw and the answers."""
    async def run():
        triton = ScriptedTriton([(200, ok_answer(), close_after_first), (200, ok_answer(), False)])
        async with triton as url:
            answers = await asyncio.to_thread(infer, url, 2)
        return triton.connections, answers

    return asyncio.run(run())


def test_a_kept_alive_connection_carries_the_next_call():
    connections, answers = two_calls(close_after_first=False)
    assert connections == 1
    np.testing.assert_array_equal(answers[1], PROBABILITIES)


def test_a_connection_triton_closed_is_replaced_and_the_call_sent_again():
    connections, answers = two_calls(close_after_first=True)
    assert connections == 2
    np.testing.assert_array_equal(answers[1], PROBABILITIES)


def test_early_gets_the_probabilities_as_they_arrive_before_the_call_returns_them():
    seen = []
    events, returned = infer_with_early(200, ok_answer(), seen.append)
    assert events == ["early", "returned"]
    np.testing.assert_array_equal(seen[0], PROBABILITIES)
    assert returned is seen[0], "decoded once"


def test_early_is_not_called_for_an_error_and_what_it_raises_is_logged_not_raised(caplog):
    events, failed = infer_with_early(500, b'{"error":"model says no"}', lambda p: None)
    assert events == ["returned"] and isinstance(failed, InferenceFailed)

    def broken(probabilities):
        raise RuntimeError("consumer bug")

    events, returned = infer_with_early(200, ok_answer(), broken)
    np.testing.assert_array_equal(returned, PROBABILITIES)
    assert "consumer bug" in caplog.text


@pytest.mark.parametrize(("probabilities", "says"), [
    (PROBABILITIES[:1], "for 2 input rows"),  # the rows cannot be told apart, so no request gets any of them
    (np.float32(0.5).reshape(()), "for 2 input rows"),
    (np.array([[0.25, np.nan], [0.9, 0.1]], dtype=np.float32), "non-finite"),  # answered as null, counted as nothing
    (np.array([[0.25, 0.75], [np.inf, 0.1]], dtype=np.float32), "non-finite"),
])
def test_an_answer_without_a_finite_row_per_input_row_is_the_models_failure(probabilities, says):
    body, _ = binary_answer({"probabilities": probabilities}, {"probabilities": "FP32"})
    events, failed = infer_with_early(200, body, lambda p: None)
    assert events == ["returned"], "early is not given a wrong answer"
    assert isinstance(failed, InferenceFailed) and says in str(failed)


def test_a_kept_connection_that_closes_on_the_request_has_it_sent_again_on_a_new_one():
    connections, (_, second) = calls_against([(200, ok_answer(), False), DROP, (200, ok_answer(), False)], 2)
    assert connections == 2
    np.testing.assert_array_equal(second, PROBABILITIES)


@pytest.mark.parametrize("garbage", [b"NOT HTTP\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{"])
def test_a_malformed_or_cut_answer_is_unavailable_not_retried_and_its_connection_not_kept(garbage):
    connections, (failed, answered) = calls_against([garbage, (200, ok_answer(), False)], 2)
    assert isinstance(failed, BackendUnavailable)
    assert connections == 2, "the next call opened a new connection"
    np.testing.assert_array_equal(answered, PROBABILITIES)


@pytest.mark.parametrize(("status", "error"), [(404, BackendUnavailable), (503, BackendUnavailable),
                                               (400, InferenceFailed), (500, InferenceFailed)])
def test_tritons_errors_map_to_unavailable_or_failed(status, error):
    async def run():
        async with ScriptedTriton([(status, b'{"error":"model says no"}', False)]) as url:
            await asyncio.to_thread(infer, url)

    with pytest.raises(error, match="model says no"):
        asyncio.run(run())


def test_a_silent_triton_is_unavailable_after_the_deadline():
    async def run():
        async with ScriptedTriton([None]) as url:
            await asyncio.to_thread(infer, url, 1, 0.3)

    with pytest.raises(BackendUnavailable, match="within 0.3s"):
        asyncio.run(run())


def test_a_refused_connection_is_unavailable():
    with pytest.raises(BackendUnavailable):
        infer("127.0.0.1:1")


@pytest.mark.parametrize(("url", "address"), [("triton:8000", ("triton", 8000, "triton:8000")),
                                            ("http://10.0.0.5:9000", ("10.0.0.5", 9000, "10.0.0.5:9000")),
                                            ("[::1]:8000", ("::1", 8000, "[::1]:8000"))])
def test_the_endpoint_may_be_host_port_a_url_or_an_ipv6_literal(url, address):
    """Both Triton clients (inference and the /v2 pass-through) read the setting this way."""
    assert triton_address(url) == address
    client = TritonInference(url, timeout_s=1, max_batch_rows=64)
    assert (client._host, client._port) == address[:2]
