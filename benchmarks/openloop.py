"""Open-loop load at a fixed rate (what wrk2 does; Debian has no wrk2): ``python -m benchmarks.openloop``.

Request *i* is scheduled at ``start + i / rate`` whatever happened to the others, and its
latency is measured from that scheduled time, not from when it was actually sent: a server
(or a generator) that falls behind shows it as latency instead of hiding it by sending less
(coordinated omission). A request due while every connection is busy waits for one, and that
wait counts too. Runs in a process of its own and prints one JSON line; ``send_lag_p99_ms``
(how late sends left against their schedule) shows whether the generator itself kept up, and
``generator_cpu_us_per_request`` what it took from the machine it measures.

The generator shares this machine's two cores with what it measures, so it is lean: raw
HTTP/1.1 on kept-alive connections driven by asyncio protocols on uvloop (no task per request),
answers parsed by ``httptools``. It costs about half the CPU per request of a stream-and-task
client and a sixth of aiohttp's. Bodies rotate through the lines of ``--body-file``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import deque
from urllib.parse import urlsplit

import httptools
import uvloop


TICK_S = 0.001
"""The sender wakes at most once a millisecond and sends everything due by then (the event loop's timers have
millisecond resolution: shorter sleeps would spin). Latency still counts from each request's own schedule."""


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Load:
    """The run's requests: what is due but waiting for a connection, and what came back."""

    def __init__(self, url: str, connections: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     "Content-Type: application/json\r\nContent-Length: ").encode()
        self.max_connections = connections
        self.opening = 0
        self.open_connections = 0
        self.idle: deque[Connection] = deque()
        self.waiting: deque[tuple[float, bytes]] = deque()
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.errors = 0
        self.answered = 0

    def send(self, scheduled: float, body: bytes) -> None:
        """Send now on an idle connection, else wait for one (opening another while under the limit)."""
        if self.idle:
            self.idle.pop().send(scheduled, body)
            return
        self.waiting.append((scheduled, body))
        if self.opening + self.open_connections < self.max_connections:
            self.opening += 1
            asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        try:
            await asyncio.get_running_loop().create_connection(lambda: Connection(self), self.host, self.port)
        except OSError:
            if self.waiting:
                self.waiting.popleft()
                self.finished(None, ok=False)
        finally:
            self.opening -= 1

    def ready(self, connection: Connection) -> None:
        """``connection`` can take a request: the oldest waiting one, else it idles."""
        if self.waiting:
            connection.send(*self.waiting.popleft())
        else:
            self.idle.append(connection)

    def finished(self, scheduled: float | None, *, ok: bool) -> None:
        self.answered += 1
        if ok and scheduled is not None:
            self.latencies.append(time.perf_counter() - scheduled)
        else:
            self.errors += 1


class Connection(asyncio.Protocol):
    """One kept-alive connection carrying one request at a time."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.scheduled: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.load.open_connections += 1
        self.load.ready(self)

    def send(self, scheduled: float, body: bytes) -> None:
        self.scheduled = scheduled
        self.load.lags.append(time.perf_counter() - scheduled)
        self.transport.write(self.load.head + b"%d\r\n\r\n" % len(body) + body)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        scheduled, self.scheduled = self.scheduled, None
        self.load.finished(scheduled, ok=self.parser.get_status_code() == 200)
        if self.parser.should_keep_alive():
            self.load.ready(self)
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.open_connections -= 1
        if self.scheduled is not None:
            self.load.finished(self.scheduled, ok=False)
        if self in self.load.idle:
            self.load.idle.remove(self)


async def run(url: str, bodies: list[bytes], *, rate: float, duration_s: float, connections: int,
              timeout_s: float) -> dict:
    load = Load(url, connections)
    total = int(rate * duration_s)
    cpu_before = cpu_seconds()
    start = time.perf_counter() + 0.05
    sent = 0
    while sent < total:
        now = time.perf_counter()
        while sent < total and start + sent / rate <= now:
            load.send(start + sent / rate, bodies[sent % len(bodies)])
            sent += 1
        await asyncio.sleep(max(TICK_S, start + sent / rate - time.perf_counter()))
    deadline = time.perf_counter() + timeout_s
    while load.answered < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() - cpu_before
    unanswered = total - load.answered
    for connection in list(load.idle):
        connection.transport.close()

    ordered = sorted(load.latencies)
    lag_ordered = sorted(load.lags)
    return {
        "rate": rate, "duration_s": duration_s, "sent": total, "ok": len(ordered),
        "errors": load.errors + unanswered, "achieved_rps": len(ordered) / elapsed,
        "p50_ms": percentile(ordered, 50) * 1000, "p95_ms": percentile(ordered, 95) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000, "max_ms": (ordered[-1] * 1000) if ordered else float("nan"),
        "send_lag_p99_ms": percentile(lag_ordered, 99) * 1000,
        "generator_cpu_us_per_request": cpu / max(total, 1) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--body-file", required=True, help="JSON bodies to POST, one per line, sent in turn.")
    parser.add_argument("--rate", type=float, default=3200, help="Requests per second.")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=256, help="Most connections open at once.")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="Seconds after the last send that answers are awaited; later ones count as errors.")
    args = parser.parse_args()
    with open(args.body_file, "rb") as file:
        bodies = [line for line in file.read().splitlines() if line.strip()]
    result = uvloop.run(run(args.url, bodies, rate=args.rate, duration_s=args.duration,
                            connections=args.connections, timeout_s=args.timeout))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
