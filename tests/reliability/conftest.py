"""A whole fleet (Triton, registry, features, monitor, gateway) serving the demo model, on free ports."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
import httpx
import pytest

from mlfleet.demo.run import run_demo
from mlfleet.fleet import Fleet, FleetConfig
from mlfleet.runtime.processes import free_port
from tests.conftest import stop_at_session_end
from tests.results import update_results

PORTS = ("gateway", "registry", "features", "monitor", "triton_http", "triton_grpc", "triton_metrics")


@pytest.fixture(scope="session")
def demo_fleet(tmp_path_factory, redis_url) -> Iterator[Fleet]:
    """The demo's fleet: stable v1, a 10 % canary v2, features materialized, some traffic sent. One fleet for the
    session (a fleet takes a minute to start): its users only add models and traffic of their own, and measure
    before/after differences."""
    config = FleetConfig(home=tmp_path_factory.mktemp("reliability"), redis_url=redis_url.rsplit("/", 1)[0] + "/9",
                         **{f"{name}_port": free_port() for name in PORTS})
    fleet = Fleet(config, echo=lambda message: None)
    try:
        fleet.start()
        summary = run_demo(config, seed=7, shift=False, requests=100, canary_percent=10.0, echo=lambda message: None)
        assert summary.errors == 0
        yield fleet
    finally:
        stop_at_session_end([child.process for child in fleet.children] + [fleet.embedded_redis])


# --- a small closed-loop load driver, shared by the fault tests ----------------------------------

@dataclass(frozen=True)
class Answer:
    """One request's outcome: HTTP status (0: no answer within the client timeout, -1: connection error)."""

    status: int
    content_type: str
    sent_at: float
    """``time.monotonic()`` when the request was sent."""
    seconds: float


@dataclass
class LoadReport:
    answers: list[Answer] = field(default_factory=list)

    def statuses(self) -> Counter:
        return Counter(a.status for a in self.answers)

    def failed(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200]

    def slowest_s(self) -> float:
        return max((a.seconds for a in self.answers), default=0.0)

    def since(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.sent_at >= moment]


class LoadDriver(threading.Thread):
    """``concurrency`` closed-loop workers posting predictions to the gateway on their own event loop.

    Bounded in count (``max_requests``) and time (``max_seconds``); :meth:`finish` stops it early.
    Counts every status and latency; a request that gets no answer within ``client_timeout_s`` counts as status 0.
    """

    def __init__(self, gateway_url: str, instances: list[dict], *, model: str = "fraud", concurrency: int = 4,
                 max_requests: int = 2000, max_seconds: float = 30.0, client_timeout_s: float = 30.0) -> None:
        super().__init__(name="fault-load", daemon=True)
        self.url = f"{gateway_url}/v1/models/{model}/predict"
        self.instances = instances
        self.concurrency = concurrency
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.client_timeout_s = client_timeout_s
        self.report = LoadReport()
        self._halt = threading.Event()

    def run(self) -> None:
        asyncio.run(self._drive())

    def finish(self) -> LoadReport:
        self._halt.set()
        self.join(timeout=self.client_timeout_s + 5)
        assert not self.is_alive(), "the load driver did not stop"
        return self.report

    def wait_for_answers(self, n: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.report.answers) < n and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.05)

    async def _drive(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        sent = itertools.count()
        timeout = aiohttp.ClientTimeout(total=self.client_timeout_s)

        async def worker(session: aiohttp.ClientSession) -> None:
            while not self._halt.is_set() and time.monotonic() < deadline:
                n = next(sent)
                if n >= self.max_requests:
                    return
                instance = self.instances[n % len(self.instances)]
                body = {"instances": [instance], "routing_key": str(instance["user_id"])}
                started = time.monotonic()
                try:
                    async with session.post(self.url, json=body) as response:
                        await response.read()
                        status, content_type = response.status, response.headers.get("content-type", "")
                except TimeoutError:
                    status, content_type = 0, ""
                except aiohttp.ClientError:
                    status, content_type = -1, ""
                    await asyncio.sleep(0.05)
                self.report.answers.append(Answer(status, content_type, started, time.monotonic() - started))

        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(worker(session) for _ in range(self.concurrency)))


def gateway_metric(gateway_url: str, name: str) -> float:
    """The sum of every sample of ``name`` on the gateway's ``/metrics``."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and (line[len(name)] in " {"))


QUEUE_FULL = 'mlfleet_gateway_events_dropped_total{reason="queue_full"}'


def events_produced(gateway_url: str) -> float:
    """Events the gateway made (one per answer): queued, or dropped because its queue was full (never queued)."""
    return gateway_metric(gateway_url, "mlfleet_gateway_events_enqueued_total") + gateway_metric(gateway_url, QUEUE_FULL)


def events_settled(gateway_url: str) -> bool:
    """Every event the gateway made is written or counted as dropped: none is in its queue or being written."""
    written, dropped = (gateway_metric(gateway_url, f"mlfleet_gateway_events_{name}_total")
                        for name in ("written", "dropped"))
    return events_produced(gateway_url) == written + dropped


def record_reliability(name: str, result: dict) -> None:
    """Put ``result`` under ``name`` in ``reliability.json`` (see :func:`tests.results.results_file`)."""
    update_results("reliability.json", lambda results: results | {name: result})


def merge_reliability(name: str, result: dict) -> None:
    """Add ``result``'s keys to what ``reliability.json`` holds under ``name`` (figures of one scenario written by
    more than one test)."""
    update_results("reliability.json", lambda results: results | {name: results.get(name, {}) | result})
