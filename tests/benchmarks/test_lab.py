"""The lab tool's process accounting (``benchmarks/lab.py``): CPU read from ``/proc``, processes found by their
command line, a Redis pid taken only from a Redis on this machine, and the request bodies it sends."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from benchmarks.lab import children_cpu_seconds, cpu_seconds, pids_with, redis_pid, request_bodies
from mlfleet.runtime.processes import wait_until


def test_a_busy_process_accrues_cpu_and_a_gone_one_spoils_the_run():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 0.6\nwhile time.time() < end: pass"])
    try:
        first = cpu_seconds(busy.pid)
        time.sleep(0.4)
        assert cpu_seconds(busy.pid) > first
    finally:
        busy.wait()
    with pytest.raises(RuntimeError, match="exited during the run"):
        cpu_seconds(busy.pid)


def test_finished_children_are_counted_once_waited_for():
    before = children_cpu_seconds()
    subprocess.run([sys.executable, "-c", "sum(range(3_000_000))"], check=True)
    assert children_cpu_seconds() > before


def test_processes_are_found_by_their_command_line():
    marker = f"lab-marker-{uuid.uuid4().hex}"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)", marker])
    try:  # found once it has started (its command line is the parent's until then)
        wait_until(lambda: pids_with(marker) == [sleeper.pid], timeout_s=5, what="the marked process")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert pids_with(marker) == []


def test_the_redis_pid_is_taken_only_from_a_redis_on_this_machine(redis_url):
    pid = redis_pid(redis_url)
    assert pid is not None and b"redis" in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert redis_pid("redis://10.255.255.1:6379/0") is None  # never asked: its pid would name a local process


def test_request_bodies_hold_the_rows_asked_for_each_from_its_own_instance():
    instances = [{"user_id": n} for n in range(5)]
    assert [orjson.loads(b)["instances"] for b in request_bodies(instances, 1)] == [[i] for i in instances]
    batched = [orjson.loads(b)["instances"] for b in request_bodies(instances, 3)]
    assert batched[0] == instances[:3] and batched[4] == [instances[4], instances[0], instances[1]]
    assert len(batched) == 5 and all(len(rows) == 3 for rows in batched)
