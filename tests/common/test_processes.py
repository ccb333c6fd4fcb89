"""Stopping child processes: asked at once, waited for later, killed when they do not go."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from mlfleet.runtime.processes import (ask_to_stop, free_port, start_process, stop_processes, wait_serving,
                                       wait_stopped)

IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"


def started(tmp_path, code: str, name: str):
    log_file = tmp_path / f"{name}.log"
    process = start_process([sys.executable, "-c", code], log_file=log_file)
    return process, log_file


def wait_for_line(log_file, text: str, process) -> None:
    for _ in range(200):
        if text in log_file.read_text():
            return
        assert process.poll() is None, log_file.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {log_file}")


def test_asked_processes_stop_before_anyone_waits_and_the_wait_reaps_them(tmp_path):
    processes = [started(tmp_path, "import time; time.sleep(60)", f"sleeper-{i}")[0] for i in range(2)]
    ask_to_stop(processes)
    for process in processes:
        assert process.wait(timeout=10) == -signal.SIGTERM
    wait_stopped(processes, timeout_s=1)
    assert all(process.returncode == -signal.SIGTERM for process in processes)


def test_a_process_that_ignores_the_request_is_killed_after_the_timeout(tmp_path):
    stubborn, log_file = started(tmp_path, IGNORES_SIGTERM, "stubborn")
    wait_for_line(log_file, "ready", stubborn)
    polite, _ = started(tmp_path, "import time; time.sleep(60)", "polite")
    stop_processes([stubborn, polite], timeout_s=0.5)
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL


def test_a_process_that_never_serves_is_stopped_before_the_error_is_raised(tmp_path):
    silent, log_file = started(tmp_path, "import time; time.sleep(60)", "silent")
    with pytest.raises(TimeoutError):
        wait_serving(silent, f"http://127.0.0.1:{free_port()}/", timeout_s=0.5, what="silent", log_file=log_file)
    assert silent.poll() == -signal.SIGTERM
