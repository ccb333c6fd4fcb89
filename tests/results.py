"""Where tests put the figures they measure: ``$MLFLEET_RESULTS_DIR`` when set (relative to the repository's root;
``make results`` sets it to ``benchmarks/results``, the files the README quotes), else a temporary folder of this
user's, so that an ordinary test run leaves the checkout as it found it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def results_file(name: str) -> Path:
    """The path a test writes its figures ``name`` to (its folder created)."""
    configured = os.environ.get("MLFLEET_RESULTS_DIR")
    folder = ROOT / configured if configured else Path(tempfile.gettempdir()) / f"mlfleet-test-results-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name
