"""Open-loop load at a fixed rate (what wrk2 does; Debian has no wrk2): ``python -m benchmarks.openloop``.

Request *i* is scheduled at ``start + i / rate`` whatever happened to the others, and its
latency is measured from that scheduled time, not from when it was actually sent: a server
(or a generator) that falls behind shows it as latency instead of hiding it by sending less
(coordinated omission). Runs in a process of its own, on aiohttp with a bounded connection
pool, and prints one JSON line; ``send_lag_p99_ms`` (how late sends left against their
schedule) shows whether the generator itself kept up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def run(url: str, body: bytes, *, rate: float, duration_s: float, connections: int,
              timeout_s: float) -> dict:
    latencies: list[float] = []
    lags: list[float] = []
    errors = 0
    total = int(rate * duration_s)
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    headers = {"Content-Type": "application/json"}

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def send(scheduled: float) -> None:
            nonlocal errors
            lags.append(time.perf_counter() - scheduled)
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        return
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                return
            latencies.append(time.perf_counter() - scheduled)

        tasks = []
        start = time.perf_counter() + 0.05
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start

    ordered = sorted(latencies)
    lag_ordered = sorted(lags)
    return {
        "rate": rate, "duration_s": duration_s, "sent": total, "ok": len(latencies), "errors": errors,
        "achieved_rps": len(latencies) / elapsed,
        "p50_ms": percentile(ordered, 50) * 1000, "p95_ms": percentile(ordered, 95) * 1000,
        "p99_ms": percentile(ordered, 99) * 1000, "max_ms": (ordered[-1] * 1000) if ordered else float("nan"),
        "send_lag_p99_ms": percentile(lag_ordered, 99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--body-file", required=True, help="JSON body to POST.")
    parser.add_argument("--rate", type=float, default=3200, help="Requests per second.")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=256, help="Most connections open at once.")
    parser.add_argument("--timeout", type=float, default=5.0, help="Seconds before a request counts as an error.")
    args = parser.parse_args()
    with open(args.body_file, "rb") as body:
        payload = body.read()
    result = asyncio.run(run(args.url, payload, rate=args.rate, duration_s=args.duration,
                             connections=args.connections, timeout_s=args.timeout))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
