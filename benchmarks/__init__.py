"""Benchmarks of the fleet: ``make bench``, ``make bench-rollback``, ``make lab``, ``make triton-delay``."""

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
"""Where every benchmark writes its figures."""
