"""Adaptive micro-batching: concurrent requests for one key share one call, then are split back.

The gateway keys batches by model version, so the requests of one version share one feature
lookup and one Triton call. A request that finds fewer than ``max_in_flight`` batches of its
key running is dispatched at once, together only with requests that arrive in the same turn
of the event loop: at concurrency 1 nothing waits. While ``max_in_flight`` batches are
running, new requests queue, and each finished batch starts the next one with as many queued
requests as fit in ``max_rows`` rows, at once, in its own last step (those requests have all
arrived: waiting for another turn of a busy loop only delayed them) — the busier a version, the
larger its batches, and no timer is involved. A request is never split: one larger than ``max_rows`` goes alone.

A lane's batches run in at most ``max_in_flight`` tasks: a task that finishes a batch runs the
next queued one itself, unless the batcher keeps each batch in its first request's context (for
tracing), when each batch gets a task of its own.

``run_batch(key, jobs, deliver)`` returns one result or exception per job, in order; each request
gets its own. If ``run_batch`` itself raises, every request of that batch (and only those) gets
the exception. ``run_batch`` may hand its results over before it returns, by calling
``deliver(results)`` (from a callback, say, in the turn of the event loop where they became
known): the requests get them at once, and what it later returns or raises no longer matters to them.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from services.common.futures import settle

K = TypeVar("K", bound=Hashable)
J = TypeVar("J")
R = TypeVar("R")
T = TypeVar("T")
Deliver = Callable[[Sequence[R | BaseException]], None]
"""Hands a batch's results (one per job, in order) to its requests."""


@dataclass(slots=True)
class Pending(Generic[J, R]):
    job: J
    rows: int
    future: asyncio.Future[R]
    context: contextvars.Context | None = None
    """The submitting request's context, when the batcher keeps contexts: its batch runs in the first member's, so
    the batch's spans join that request's trace (not the trace of whichever earlier batch happened to start it)."""


@dataclass(slots=True)
class _Lane(Generic[J, R]):
    """The queue and running batches of one key."""

    queue: deque[Pending[J, R]] = field(default_factory=deque)
    in_flight: int = 0
    """Batches running, and the task that is starting (counted from when a request starts it)."""
    scheduled: bool = False
    """A task started by a request has yet to take its batch: it will take the queue's head at its first step."""


def take_batch(queue: deque[Pending[J, R]], max_rows: int) -> list[Pending[J, R]]:
    """Pop requests from the head of ``queue``, in arrival order, while their rows fit in ``max_rows``;
    always at least one, so a request larger than ``max_rows`` still goes (alone)."""
    batch = [queue.popleft()]
    rows = batch[0].rows
    while queue and rows + queue[0].rows <= max_rows:
        rows += queue[0].rows
        batch.append(queue.popleft())
    return batch


def check_results(batch: Sequence[Pending[J, R]], results: Sequence[R | BaseException]) -> None:
    """Refuse results that do not match the batch one for one."""
    if len(results) != len(batch):
        raise RuntimeError(f"a batch of {len(batch)} jobs returned {len(results)} results")


def settle_batch(batch: Sequence[Pending[J, R]], results: Sequence[R | BaseException]) -> None:
    """Each request of ``batch`` gets its result (unless it has one already, or its caller went away)."""
    check_results(batch, results)
    for pending, result in zip(batch, results):
        settle(pending.future, result)


class BatcherClosed(RuntimeError):
    """The batcher has been closed: it takes no new requests."""


class QueueFull(RuntimeError):
    """As many requests as the batcher queues already wait for a batch of this key."""


def cancel_if_never_run(batch: Sequence[Pending[J, R]], task: asyncio.Task) -> None:
    """A task cancelled before its first step never ran the batch it was given: that batch's requests are
    cancelled with it (a task cancelled later cancels them itself)."""
    if task.cancelled():
        for pending in batch:
            pending.future.cancel()


def split_rows(values: Sequence[T], sizes: Sequence[int]) -> list[Sequence[T]]:
    """Consecutive slices of ``values`` of the given ``sizes`` (which must add up to ``len(values)``)."""
    if sum(sizes) != len(values):
        raise ValueError(f"{len(values)} rows cannot be split into parts of {list(sizes)}")
    parts, start = [], 0
    for size in sizes:
        parts.append(values[start:start + size])
        start += size
    return parts


class MicroBatcher(Generic[K, J, R]):
    def __init__(self, run_batch: Callable[[K, list[J], Deliver[R]], Awaitable[Sequence[R | BaseException]]], *,
                 max_rows: int, max_in_flight: int, max_queued: int | None = None, keep_contexts: bool = True) -> None:
        """``max_queued``: most requests of one key waiting for a batch; one more is refused at once
        (:class:`QueueFull`) rather than queued behind them (no bound when ``None``).

        ``keep_contexts``: each batch runs in a task of its own, in its first request's context (so that a
        tracer's spans join that request's trace). Without it, a task that finishes a batch runs the lane's next
        one itself: one task and one loop turn less per batch (lab, full path at 16 connections: +4 % requests/s,
        gateway −5 µs per request, ``lab-20261126-115748.json``), for batches that run in whatever context
        started their task."""
        if max_rows < 1 or max_in_flight < 1:
            raise ValueError("max_rows and max_in_flight must be at least 1")
        self._run_batch = run_batch
        self._max_rows = max_rows
        self._max_in_flight = max_in_flight
        self._max_queued = max_queued
        self._keep_contexts = keep_contexts
        self._lanes: dict[K, _Lane[J, R]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    async def submit(self, key: K, job: J, *, rows: int) -> R:
        """``job``'s result from the batch it joined; raises the job's own error, or its batch's,
        :class:`QueueFull` when ``max_queued`` requests of ``key`` already wait, and :class:`BatcherClosed` once the
        batcher is closed."""
        if self._closed:
            raise BatcherClosed("the micro-batcher is closed")
        lane = self._lanes.setdefault(key, _Lane())
        if self._max_queued is not None and len(lane.queue) >= self._max_queued:
            raise QueueFull(f"{len(lane.queue)} requests already wait for a batch")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        lane.queue.append(Pending(job, rows, future, contextvars.copy_context() if self._keep_contexts else None))
        self._schedule(key, lane)
        return await future

    async def close(self) -> None:
        """Cancel running batches and queued requests (their callers get ``CancelledError``)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for lane in self._lanes.values():
            while lane.queue:
                lane.queue.popleft().future.cancel()

    def _schedule(self, key: K, lane: _Lane[J, R]) -> None:
        """Start a task for a free slot; it takes its batch at its first step, in the loop's next turn, so that the
        requests of this turn go in it together."""
        if not self._closed and not lane.scheduled and lane.queue and lane.in_flight < self._max_in_flight:
            lane.scheduled = True
            lane.in_flight += 1
            self._start(key, lane, None, lane.queue[0].context)

    def _dispatch(self, key: K, lane: _Lane[J, R]) -> None:
        """Start a task, its batch taken now, for each free slot (unless a starting task is about to take them)."""
        while not self._closed and not lane.scheduled and lane.queue and lane.in_flight < self._max_in_flight:
            batch = take_batch(lane.queue, self._max_rows)
            lane.in_flight += 1
            self._start(key, lane, batch, batch[0].context)

    def _start(self, key: K, lane: _Lane[J, R], batch: list[Pending[J, R]] | None,
               context: contextvars.Context | None) -> None:
        task = asyncio.create_task(self._run(key, lane, batch), context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if batch is not None:
            task.add_done_callback(functools.partial(cancel_if_never_run, batch))

    async def _run(self, key: K, lane: _Lane[J, R], batch: list[Pending[J, R]] | None) -> None:
        if batch is None:  # started by a request: take what queued in its turn
            lane.scheduled = False
            if self._closed or not lane.queue:
                lane.in_flight -= 1
                return
            batch = take_batch(lane.queue, self._max_rows)
            self._dispatch(key, lane)
        while batch:
            try:
                results = await self._run_batch(key, [p.job for p in batch], functools.partial(settle_batch, batch))
                check_results(batch, results)
            except Exception as exc:
                results = [exc] * len(batch)
            except BaseException:  # cancelled (the batcher closing, or an await inside the batch): not a result
                lane.in_flight -= 1
                for pending in batch:
                    pending.future.cancel()
                self._dispatch(key, lane)  # requests queued behind it still start (not once the batcher is closed)
                raise
            settle_batch(batch, results)
            lane.in_flight -= 1
            batch = self._next_in_task(key, lane)

    def _next_in_task(self, key: K, lane: _Lane[J, R]) -> list[Pending[J, R]] | None:
        """After a batch: the next one of its lane for the same task to run (when contexts are not kept), after
        starting tasks for the lane's other free slots; ``None`` ends the task. Unless a task started by a request
        is about to take them, queued requests start now, not a loop turn later: they have all arrived."""
        if lane.scheduled:
            return None
        batch = None
        if not self._keep_contexts and not self._closed and lane.queue:
            batch = take_batch(lane.queue, self._max_rows)
            lane.in_flight += 1
        self._dispatch(key, lane)
        return batch
