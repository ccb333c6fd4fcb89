"""The event writer against a real Redis, and against none: requests never wait on it."""

from __future__ import annotations

import asyncio
import json
import uuid

import hiredis
import numpy as np
from prometheus_client import CollectorRegistry

from mlfleet.runtime.processes import free_port
from services.common.errors import InvalidInput
from services.common.pipelined_redis import PipelinedRedis
from services.common.redis import PREDICTIONS_STREAM, connect
from services.common.schemas import PredictionEvent, Variant, VersionRoute
from services.gateway.events import EventWriter
from services.gateway.metrics import GatewayMetrics
from services.gateway.predictions import RequestContext, event_json
from services.gateway.router import Choice
from services.gateway.schemas import Prediction
from tests.gateway.factories import signature


def event(request_id: str) -> bytes:
    return PredictionEvent(request_id=request_id, model="m", version=1, timestamp=0.0,
                           latency_ms=1.0).model_dump_json().encode()


def value(metrics: GatewayMetrics, counter: str, *labels: str) -> float:
    """A counter's value. Compare deltas: importing Feast switches prometheus_client to multiprocess
    mode, where same-named metrics of one process share their value across registries."""
    metric = getattr(metrics, counter)
    return (metric.labels(*labels) if labels else metric)._value.get()


def own_connection(url: str, timeout_s: float = 2.0) -> PipelinedRedis:
    return PipelinedRedis(url, connect_timeout_s=timeout_s, stale_after_s=timeout_s)


async def wait_for(predicate, timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_events_are_written_in_batches_to_the_stream(redis_url):
    metrics = GatewayMetrics.create(CollectorRegistry())
    redis = connect(redis_url)
    writer = EventWriter(own_connection(redis_url), metrics, queue_size=100, batch_size=4, maxlen=10_000)
    ids = [uuid.uuid4().hex for _ in range(10)]
    written = value(metrics, "events_written")
    writer.start()
    for request_id in ids:
        writer.enqueue(event(request_id))
    await wait_for(lambda: value(metrics, "events_written") == written + 10)
    await writer.close()
    entries = await redis.xrevrange(PREDICTIONS_STREAM, count=10)
    assert [json.loads(fields[b"event"])["request_id"] for _, fields in reversed(entries)] == ids
    await redis.aclose()


async def test_full_queue_drops_and_a_dead_redis_costs_events_not_requests():
    metrics = GatewayMetrics.create(CollectorRegistry())
    writer = EventWriter(own_connection(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2), metrics, queue_size=3,
                         batch_size=2, maxlen=100)
    enqueued, full, failed, written = (value(metrics, "events_enqueued"), value(metrics, "events_dropped", "queue_full"),
                                       value(metrics, "events_dropped", "write_failed"), value(metrics, "events_written"))
    for i in range(5):
        writer.enqueue(event(str(i)))
    assert value(metrics, "events_enqueued") == enqueued + 3
    assert value(metrics, "events_dropped", "queue_full") == full + 2
    writer.start()
    await wait_for(lambda: value(metrics, "events_dropped", "write_failed") >= failed + 2)
    writer.enqueue(event("after"))
    assert value(metrics, "events_written") == written
    await writer.close(drain_timeout_s=0.1)


async def test_a_redis_that_lost_the_script_is_sent_it_again(redis_url):
    metrics = GatewayMetrics.create(CollectorRegistry())
    redis = connect(redis_url)
    writer = EventWriter(own_connection(redis_url), metrics, queue_size=100, batch_size=4, maxlen=10_000)
    writer.start()
    written = value(metrics, "events_written")
    writer.enqueue(event("before-flush"))
    await wait_for(lambda: value(metrics, "events_written") == written + 1)
    await redis.script_flush()  # as a restarted Redis would have
    writer.enqueue(event("after-flush"))
    await wait_for(lambda: value(metrics, "events_written") == written + 2)
    await writer.close()
    entries = await redis.xrevrange(PREDICTIONS_STREAM, count=2)
    assert [json.loads(fields[b"event"])["request_id"] for _, fields in reversed(entries)] == ["before-flush", "after-flush"]
    await redis.aclose()


class ScriptlessRedis:
    """A Redis stand-in that answers the connection's handshake (``+OK``, and ``+PONG`` to its health check) but never
    a script call: a Redis stuck on the writer's write."""

    def __init__(self) -> None:
        self.connections = 0
        self.script_calls = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        commands = hiredis.Reader()
        while data := await reader.read(65536):
            commands.feed(data)
            while (command := commands.gets()) is not False:
                name = command[0].upper()
                if name in (b"EVALSHA", b"EVAL"):
                    self.script_calls += 1
                else:
                    writer.write(b"+PONG\r\n" if name == b"PING" else b"+OK\r\n")


async def test_a_write_redis_never_answers_is_dropped_at_its_deadline_and_the_connection_replaced():
    stub = ScriptlessRedis()
    server = await asyncio.start_server(stub.serve, "127.0.0.1", 0)
    url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    metrics = GatewayMetrics.create(CollectorRegistry())
    writer = EventWriter(PipelinedRedis(url, connect_timeout_s=2, stale_after_s=0.15), metrics, queue_size=10,
                         batch_size=4, maxlen=100, write_timeout_s=0.3)
    failed, written = value(metrics, "events_dropped", "write_failed"), value(metrics, "events_written")
    writer.start()
    writer.enqueue(event("unanswered-1"))
    await wait_for(lambda: value(metrics, "events_dropped", "write_failed") == failed + 1, timeout_s=5)
    writer.enqueue(event("unanswered-2"))
    await wait_for(lambda: value(metrics, "events_dropped", "write_failed") == failed + 2, timeout_s=5)
    await writer.close(drain_timeout_s=0.1)
    server.close()
    assert stub.script_calls == 2, "each batch was sent, and went unanswered"
    assert stub.connections == 2, "the stuck connection was replaced for the next write"
    assert value(metrics, "events_written") == written


async def test_events_arriving_within_the_linger_are_written_together(redis_url):
    metrics = GatewayMetrics.create(CollectorRegistry())
    writer = EventWriter(own_connection(redis_url), metrics, queue_size=100, batch_size=50, maxlen=10_000, linger_s=0.2)
    sizes: list[int] = []
    write = writer._write

    async def recording(batch):
        sizes.append(len(batch))
        await write(batch)

    writer._write = recording
    writer.start()
    for i in range(5):
        writer.enqueue(event(f"linger-{i}"))
        await asyncio.sleep(0.01)
    await wait_for(lambda: sum(sizes) == 5)
    await writer.close()
    assert sizes == [5]


async def test_closing_writes_what_the_writer_holds_during_its_linger(redis_url):
    metrics = GatewayMetrics.create(CollectorRegistry())
    writer = EventWriter(own_connection(redis_url), metrics, queue_size=100, batch_size=50, maxlen=10_000, linger_s=0.5)
    written, dropped = value(metrics, "events_written"), value(metrics, "events_dropped", "shutdown")
    writer.start()
    writer.enqueue(event("held-at-close"))
    await asyncio.sleep(0.05)  # the writer has taken it and lingers
    await writer.close()
    assert value(metrics, "events_written") == written + 1
    assert value(metrics, "events_dropped", "shutdown") == dropped


def test_the_gateways_event_json_is_a_prediction_event_with_every_field():
    positive_first = signature().output.model_copy(update={"classes": ["fraud", "legit"], "positive_class_index": 0})
    choice = Choice(VersionRoute(version=3, signature=signature().model_copy(update={"output": positive_first})),
                    Variant.canary)
    ctx = RequestContext.begin("req-1", "a" * 32)
    tensor = np.array([[1.5, 2.0, 3.0]], dtype=np.float32)
    ok = json.loads(event_json(ctx, "fraud", choice, "ok", 1.25, tensor, [Prediction(score=0.75, label=1, probabilities=[0.25, 0.75])], None,
                               "00-" + "a" * 32 + "-" + "b" * 16 + "-01"))
    assert set(ok) == set(PredictionEvent.model_fields)  # a field added to the schema must be written here too
    event = PredictionEvent.model_validate(ok)
    assert (event.request_id, event.trace_id, event.model, event.version, event.variant) == \
        ("req-1", "a" * 32, "fraud", 3, Variant.canary)
    assert (event.timestamp, event.latency_ms, event.status, event.instances) == (ctx.arrived, 1.25, "ok", 1)
    assert event.features == [[1.5, 2.0, 3.0]] and event.feature_names == [i.name for i in signature().inputs]
    assert (event.scores, event.labels, event.error_code) == ([0.75], [1], None)
    assert event.positive_label == "fraud"

    failed = PredictionEvent.model_validate_json(event_json(ctx, "fraud", choice, "error", 2.0, None, [],
                                                            InvalidInput("bad"), None))
    assert (failed.status, failed.error_code) == ("error", InvalidInput("x").code)
    assert (failed.features, failed.instances, failed.positive_label) == ([], 0, None)
