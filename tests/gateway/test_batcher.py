"""The micro-batcher's pure logic: which requests share a batch, how rows are split back, whose errors are whose."""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway.batcher import BatcherClosed, MicroBatcher, Pending, QueueFull, split_rows, take_batch


def queue_of(*rows: int) -> deque[Pending[str, str]]:
    return deque(Pending(f"job{i}", n, None) for i, n in enumerate(rows))  # futures are not touched here


def test_take_batch_takes_whole_requests_in_arrival_order_while_they_fit():
    queue = queue_of(10, 20, 30, 5)
    assert [p.job for p in take_batch(queue, 64)] == ["job0", "job1", "job2"]
    assert [p.job for p in queue] == ["job3"]


def test_take_batch_sends_a_request_larger_than_the_limit_alone():
    queue = queue_of(100, 1)
    assert [p.job for p in take_batch(queue, 64)] == ["job0"]
    assert [p.job for p in take_batch(queue, 64)] == ["job1"]


@given(st.lists(st.integers(min_value=1, max_value=80), min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_batches_keep_order_and_respect_the_row_limit(rows, max_rows):
    queue = queue_of(*rows)
    taken = []
    while queue:
        batch = take_batch(queue, max_rows)
        assert len(batch) == 1 or sum(p.rows for p in batch) <= max_rows
        taken.extend(p.job for p in batch)
    assert taken == [f"job{i}" for i in range(len(rows))]


@given(st.lists(st.integers(min_value=0, max_value=5), max_size=10))
def test_split_rows_gives_each_part_its_own_consecutive_rows(sizes):
    values = list(range(sum(sizes)))
    parts = split_rows(values, sizes)
    assert [len(p) for p in parts] == sizes
    assert [v for part in parts for v in part] == values


def test_split_rows_refuses_sizes_that_do_not_add_up():
    with pytest.raises(ValueError):
        split_rows([1, 2, 3], [1, 1])


class Recorder:
    """A ``run_batch`` that records its batches and answers each job with ``job * 10``, or its own error (a negative
    job); a batch holding job 0 fails as a whole, as one whose Triton call fails."""

    def __init__(self, *, gate: asyncio.Event | None = None) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.gate = gate

    async def __call__(self, key: str, jobs: list[int], deliver) -> list[int | Exception]:
        self.batches.append((key, list(jobs)))
        if self.gate is not None:
            await self.gate.wait()
        if 0 in jobs:
            raise RuntimeError("triton down")
        return [ValueError(f"job {j} is invalid") if j < 0 else j * 10 for j in jobs]


async def one_running_then_queued(batcher: MicroBatcher, *later: int) -> tuple[asyncio.Task, list[asyncio.Task]]:
    """Submit job 1, let its batch start, then submit ``later`` (they queue behind it); their tasks."""
    first = asyncio.create_task(batcher.submit("m:1", 1, rows=1))
    await asyncio.sleep(0.01)
    queued = [asyncio.create_task(batcher.submit("m:1", j, rows=1)) for j in later]
    await asyncio.sleep(0.01)
    return first, queued


async def test_a_lone_request_is_dispatched_alone_and_at_once():
    run = Recorder()
    batcher = MicroBatcher(run, max_rows=64, max_in_flight=1)
    assert await batcher.submit("m:1", 4, rows=1) == 40
    assert run.batches == [("m:1", [4])]


async def test_requests_that_arrive_while_a_batch_runs_share_the_next_batch():
    gate = asyncio.Event()
    run = Recorder(gate=gate)
    batcher = MicroBatcher(run, max_rows=3, max_in_flight=1)
    first = asyncio.create_task(batcher.submit("m:1", 1, rows=1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(batcher.submit("m:1", j, rows=1)) for j in (2, 3, 4, 5)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == 10
    assert await asyncio.gather(*waiting) == [20, 30, 40, 50]
    assert run.batches == [("m:1", [1]), ("m:1", [2, 3, 4]), ("m:1", [5])]


async def test_keys_are_batched_separately():
    run = Recorder()
    batcher = MicroBatcher(run, max_rows=64, max_in_flight=1)
    results = await asyncio.gather(batcher.submit("m:1", 1, rows=1), batcher.submit("m:2", 2, rows=1),
                                   batcher.submit("m:1", 3, rows=1))
    assert results == [10, 20, 30]
    assert sorted(run.batches) == [("m:1", [1, 3]), ("m:2", [2])]


async def test_a_job_error_fails_only_that_request():
    batcher = MicroBatcher(Recorder(), max_rows=64, max_in_flight=1)
    results = await asyncio.gather(batcher.submit("m:1", 1, rows=1), batcher.submit("m:1", -1, rows=1),
                                   batcher.submit("m:1", 2, rows=1), return_exceptions=True)
    assert results[0] == 10 and results[2] == 20
    assert isinstance(results[1], ValueError) and str(results[1]) == "job -1 is invalid"


async def test_a_failing_batch_fails_its_own_requests_only():
    gate = asyncio.Event()
    run = Recorder(gate=gate)
    batcher = MicroBatcher(run, max_rows=2, max_in_flight=1)
    failing = [asyncio.create_task(batcher.submit("m:1", j, rows=1)) for j in (0, 1)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = asyncio.create_task(batcher.submit("m:1", 2, rows=1))
    await asyncio.sleep(0)
    gate.set()
    for task in failing:
        with pytest.raises(RuntimeError, match="triton down"):
            await task
    assert await later == 20
    assert run.batches == [("m:1", [0, 1]), ("m:1", [2])]


async def test_in_flight_batches_are_bounded_per_key():
    gate = asyncio.Event()
    run = Recorder(gate=gate)
    batcher = MicroBatcher(run, max_rows=64, max_in_flight=2)
    tasks = []
    for j in range(1, 5):
        tasks.append(asyncio.create_task(batcher.submit("m:1", j, rows=1)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert run.batches == [("m:1", [1]), ("m:1", [2])]
    gate.set()
    assert await asyncio.gather(*tasks) == [10, 20, 30, 40]
    assert run.batches[2:] == [("m:1", [3, 4])]


@pytest.mark.parametrize("keep_contexts", [True, False])
async def test_close_cancels_the_running_batch_and_the_waiting_requests(keep_contexts):
    gate = asyncio.Event()
    run = Recorder(gate=gate)
    batcher = MicroBatcher(run, max_rows=64, max_in_flight=1, keep_contexts=keep_contexts)
    running = asyncio.create_task(batcher.submit("m:1", 1, rows=1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    queued = asyncio.create_task(batcher.submit("m:1", 2, rows=1))
    await asyncio.sleep(0)
    await batcher.close()
    for task in (running, queued):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert run.batches == [("m:1", [1])]


async def test_a_full_queue_refuses_the_next_request_at_once_and_serves_the_rest():
    gate = asyncio.Event()
    batcher = MicroBatcher(Recorder(gate=gate), max_rows=64, max_in_flight=1, max_queued=2)
    first, queued = await one_running_then_queued(batcher, 2, 3)
    with pytest.raises(QueueFull):
        await batcher.submit("m:1", 4, rows=1)
    other = asyncio.create_task(batcher.submit("m:2", 5, rows=1))  # another key has a queue of its own
    gate.set()
    assert await asyncio.gather(first, *queued, other) == [10, 20, 30, 50]


async def test_close_settles_a_batch_whose_task_had_not_started_and_refuses_new_requests():
    """A finished batch starts a task for the next one; a close that runs before that task's first step cancels
    the task, and its requests are cancelled with it rather than left waiting for ever."""
    closing: list[asyncio.Task] = []

    async def run_batch(key, jobs, deliver):
        if jobs == [1]:
            await asyncio.sleep(0.01)
            closing.append(asyncio.create_task(batcher.close()))  # its first step comes before the next batch's task
        return [j * 10 for j in jobs]

    batcher = MicroBatcher(run_batch, max_rows=64, max_in_flight=1)
    first = asyncio.create_task(batcher.submit("m:1", 1, rows=1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    second = asyncio.create_task(batcher.submit("m:1", 2, rows=1))
    assert await first == 10
    await asyncio.gather(*closing)
    done, _ = await asyncio.wait([second], timeout=5)
    assert done and second.cancelled()
    with pytest.raises(BatcherClosed):
        await batcher.submit("m:1", 3, rows=1)


async def test_a_batch_runs_in_its_first_requests_context_even_when_an_earlier_batch_starts_it():
    request = contextvars.ContextVar("request")
    seen: list[tuple[list[str], str]] = []
    release_first = asyncio.Event()

    async def run_batch(key, jobs, deliver):
        seen.append((jobs, request.get()))
        if jobs == ["a"]:
            await release_first.wait()
        return jobs

    batcher = MicroBatcher(run_batch, max_rows=10, max_in_flight=1)

    async def submit(name: str) -> str:
        request.set(name)
        return await batcher.submit("model-v1", name, rows=1)

    first = asyncio.create_task(submit("a"))
    await asyncio.sleep(0.01)  # a's batch is running; b and c queue behind it
    queued = [asyncio.create_task(submit("b")), asyncio.create_task(submit("c"))]
    await asyncio.sleep(0.01)
    release_first.set()  # a's batch ends and starts the next one
    assert await asyncio.gather(first, *queued) == ["a", "b", "c"]
    assert seen == [(["a"], "a"), (["b", "c"], "b")]


@pytest.mark.parametrize(("keep_contexts", "turns"), [(True, 2), (False, 1)])
async def test_requests_queued_behind_a_batch_start_as_it_ends_not_a_loop_turn_later(keep_contexts, turns):
    """They have all arrived while it ran, so there is nothing to wait for: each turn of the event loop costs a busy
    gateway a few hundred microseconds (measured: +5 % throughput at 16 connections, lab-20261126-115447.json).
    Without kept contexts the same task runs the next batch, a task's first step (one more turn) less."""
    gate = asyncio.Event()
    run = Recorder(gate=gate)
    batcher = MicroBatcher(run, max_rows=64, max_in_flight=1, keep_contexts=keep_contexts)
    first, queued = await one_running_then_queued(batcher, 2, 3)
    gate.set()
    waited = 0
    while len(run.batches) < 2:
        await asyncio.sleep(0)
        waited += 1
    assert waited == turns, "the next batch waited for a dispatch of its own"
    assert await asyncio.gather(first, *queued) == [10, 20, 30]
    assert run.batches == [("m:1", [1]), ("m:1", [2, 3])]


async def test_without_kept_contexts_a_task_runs_its_lanes_next_batch_and_free_slots_start_their_own():
    gate = asyncio.Event()
    tasks: list[tuple[list[int], asyncio.Task]] = []

    async def run_batch(key, jobs, deliver):
        tasks.append((jobs, asyncio.current_task()))
        await gate.wait()
        return [j * 10 for j in jobs]

    batcher = MicroBatcher(run_batch, max_rows=2, max_in_flight=2, keep_contexts=False)
    first, queued = await one_running_then_queued(batcher, 2, 3, 4, 5, 6)
    gate.set()
    assert await asyncio.gather(first, *queued) == [10, 20, 30, 40, 50, 60]
    by_jobs = {tuple(jobs): task for jobs, task in tasks}
    assert list(by_jobs) == [(1,), (2, 3), (4, 5), (6,)]
    assert by_jobs[(1,)] is by_jobs[(4, 5)], "the task that ran the first batch ran a later one"
    assert len({id(task) for task in by_jobs.values()}) == 2, "never more tasks than batches in flight"


@pytest.mark.parametrize("keep_contexts", [True, False])
async def test_requests_of_one_turn_start_their_batch_in_the_next_turn(keep_contexts):
    """One turn lets the requests that arrive together share the batch; the task that runs it takes them at its
    first step, not a dispatch callback one turn before it (a turn less for every batch a request starts)."""
    run = Recorder()
    batcher = MicroBatcher(run, max_rows=64, max_in_flight=2, keep_contexts=keep_contexts)
    submitted = [asyncio.ensure_future(batcher.submit("m:1", j, rows=1)) for j in (1, 2, 3)]
    await asyncio.sleep(0)  # the submits run and queue
    waited = 0
    while not run.batches:
        await asyncio.sleep(0)
        waited += 1
    assert waited == 1
    assert await asyncio.gather(*submitted) == [10, 20, 30]
    assert run.batches == [("m:1", [1, 2, 3])]


@pytest.mark.parametrize("keep_contexts", [True, False])
async def test_a_batch_cancelled_from_inside_still_lets_the_requests_behind_it_start(keep_contexts):
    gate = asyncio.Event()

    async def run_batch(key, jobs, deliver):
        if jobs == [1]:
            await gate.wait()
            raise asyncio.CancelledError  # e.g. an await on a future someone else cancelled
        return [j * 10 for j in jobs]

    batcher = MicroBatcher(run_batch, max_rows=64, max_in_flight=1, keep_contexts=keep_contexts)
    first, queued = await one_running_then_queued(batcher, 2, 3)
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(asyncio.gather(*queued), 1) == [20, 30]


async def test_results_delivered_early_reach_the_requests_before_the_batch_returns():
    returning = asyncio.Event()

    async def run_batch(key, jobs, deliver):
        deliver([j * 10 for j in jobs])
        await returning.wait()
        return [-1 for _ in jobs]  # too late: the requests kept what was delivered

    batcher = MicroBatcher(run_batch, max_rows=64, max_in_flight=1)
    requests = [asyncio.ensure_future(batcher.submit("m:1", j, rows=1)) for j in (1, 2)]
    assert await asyncio.wait_for(asyncio.gather(*requests), 1) == [10, 20]
    returning.set()
    assert await asyncio.wait_for(batcher.submit("m:1", 3, rows=1), 1) == 30, "the lane goes on after the batch"


async def test_a_batch_that_fails_after_delivering_leaves_its_requests_their_results():
    async def run_batch(key, jobs, deliver):
        deliver([j * 10 for j in jobs])
        raise RuntimeError("Triton's deadline passed in the turn the answer arrived")

    batcher = MicroBatcher(run_batch, max_rows=64, max_in_flight=1)
    assert await asyncio.wait_for(asyncio.gather(batcher.submit("m:1", 1, rows=1), batcher.submit("m:1", 2, rows=1)),
                                  1) == [10, 20]
