"""Open-loop load at a fixed rate (what wrk2 does; Debian has no wrk2): ``python -m benchmarks.openloop``.

Request *i* is scheduled at ``start + i / rate`` whatever happened to the others, and its
latency is measured from that scheduled time, not from when it was actually sent: a server
(or a generator) that falls behind shows it as latency instead of hiding it by sending less
(coordinated omission). Runs in a process of its own and prints one JSON line;
``send_lag_p99_ms`` (how late sends left against their schedule) shows whether the generator
itself kept up, and ``generator_cpu_us_per_request`` what it took from the machine under test.

The generator shares the machine's two cores with what it measures, so it is kept lean: HTTP/1.1
on kept-alive asyncio connections (uvloop), answers parsed by ``httptools``, about a third of the
CPU per request that aiohttp took. Bodies rotate through the lines of ``--body-file``.
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


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Answer:
    """Status and completion of one HTTP response (``httptools`` callbacks)."""

    def __init__(self) -> None:
        self.complete = False
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()


class Client:
    """POSTs on kept-alive connections: an idle one when there is one, else a new one (at most ``connections``)."""

    def __init__(self, url: str, connections: int) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     "Content-Type: application/json\r\nContent-Length: ").encode()
        self.idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = deque()
        self.slots = asyncio.Semaphore(connections)

    async def post(self, body: bytes) -> int:
        async with self.slots:
            reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
            try:
                writer.write(self.head + b"%d\r\n\r\n" % len(body) + body)
                answer = Answer()
                while not answer.complete:
                    chunk = await reader.read(65_536)
                    if not chunk:
                        raise ConnectionResetError("server closed the connection")
                    answer.parser.feed_data(chunk)
            except BaseException:
                writer.close()
                raise
            status = answer.parser.get_status_code()
            if answer.keep_alive:
                self.idle.append((reader, writer))
            else:
                writer.close()
            return status


async def run(url: str, bodies: list[bytes], *, rate: float, duration_s: float, connections: int,
              timeout_s: float) -> dict:
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0
    total = int(rate * duration_s)
    client = Client(url, connections)

    async def send(scheduled: float, body: bytes) -> None:
        nonlocal errors
        lags.append(time.perf_counter() - scheduled)
        try:
            async with asyncio.timeout(timeout_s):
                status = await client.post(body)
        except (OSError, TimeoutError, httptools.HttpParserError):
            errors += 1
            return
        if status != 200:
            errors += 1
            return
        latencies.append(time.perf_counter() - scheduled)

    cpu_before = cpu_seconds()
    tasks = []
    start = time.perf_counter() + 0.05
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(scheduled, bodies[i % len(bodies)])))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds() - cpu_before
    for _, writer in client.idle:
        writer.close()

    ordered = sorted(latencies)
    lag_ordered = sorted(lags)
    return {
        "rate": rate, "duration_s": duration_s, "sent": total, "ok": len(latencies), "errors": errors,
        "achieved_rps": len(latencies) / elapsed,
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
    parser.add_argument("--timeout", type=float, default=5.0, help="Seconds before a request counts as an error.")
    args = parser.parse_args()
    with open(args.body_file, "rb") as file:
        bodies = [line for line in file.read().splitlines() if line.strip()]
    result = uvloop.run(run(args.url, bodies, rate=args.rate, duration_s=args.duration,
                            connections=args.connections, timeout_s=args.timeout))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
