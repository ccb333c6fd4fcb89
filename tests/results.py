"""Where tests put the figures they measure: ``$MLFLEET_RESULTS_DIR`` when set (relative to the repository's root;
``make results`` sets it to ``benchmarks/results``, the files the README quotes), else a temporary folder of this
user's, so that an ordinary test run leaves the checkout as it found it."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def results_file(name: str) -> Path:
    """The path a test writes its figures ``name`` to (its folder created)."""
    configured = os.environ.get("MLFLEET_RESULTS_DIR")
    folder = ROOT / configured if configured else Path(tempfile.gettempdir()) / f"mlfleet-test-results-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def update_results(name: str, update: Callable[[dict], dict]) -> None:
    """Replace the JSON object in ``name`` (a :func:`results_file`) by what ``update`` makes of it, under an
    exclusive lock and written whole: the suite's workers write figures of different tests to the same file."""
    path = results_file(name)
    lock_file = Path(tempfile.gettempdir()) / f"mlfleet-test-results-{os.getuid()}-{path.name}.lock"
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = json.loads(path.read_text()) if path.exists() else {}
        written = path.with_name(f".{path.name}.{os.getpid()}")
        written.write_text(json.dumps(update(current), indent=2, sort_keys=True) + "\n")
        written.replace(path)
