"""Reference profiles: a compact description of a training distribution, per feature.

Built when a version is registered (by the client) and compared with live traffic by the
monitor. Numbers get quantile bin edges, the training frequency in each bin and a sample;
categories (low-cardinality codes such as ``is_online``) get each category's frequency; the
prediction scores get a fixed histogram over [0, 1] and a sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

SCORE_BINS = 20
SAMPLE_SIZE = 500


def _sample(data: np.ndarray) -> list[float]:
    """A fixed-seed sample of ``data`` for two-sample tests (KS) against live traffic."""
    if data.size == 0:
        return []
    return [float(v) for v in np.random.default_rng(0).choice(data, size=min(SAMPLE_SIZE, data.size), replace=False)]


def numeric_profile(values: Sequence[float], *, bins: int = 10) -> dict:
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    if data.size == 0:
        raise ValueError("cannot profile an empty column")
    edges = np.unique(np.quantile(data, np.linspace(0.0, 1.0, bins + 1)))
    if edges.size < 2:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    inner = edges[1:-1]
    counts = np.bincount(np.searchsorted(inner, data, side="right"), minlength=edges.size - 1)
    return {
        "kind": "numeric",
        "count": int(data.size),
        "mean": float(data.mean()),
        "std": float(data.std()),
        "min": float(data.min()),
        "max": float(data.max()),
        "bin_edges": [float(e) for e in edges],
        "frequencies": [float(c) / data.size for c in counts],
        "sample": _sample(data),
    }


def categorical_profile(values: Sequence[float]) -> dict:
    """Frequency of each category (numeric codes), for chi-square and Jensen–Shannon tests."""
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    if data.size == 0:
        raise ValueError("cannot profile an empty column")
    categories, counts = np.unique(data, return_counts=True)
    return {
        "kind": "categorical",
        "count": int(data.size),
        "categories": [float(c) for c in categories],
        "frequencies": [float(c) / data.size for c in counts],
    }


def score_profile(scores: Sequence[float]) -> dict:
    data = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, SCORE_BINS + 1)
    counts, _ = np.histogram(data, bins=edges)
    return {
        "kind": "score",
        "count": int(data.size),
        "mean": float(data.mean()) if data.size else 0.0,
        "bin_edges": [float(e) for e in edges],
        "frequencies": [float(c) / max(int(data.size), 1) for c in counts],
        "sample": _sample(data),
    }


def build_reference_profile(columns: Mapping[str, Sequence[float]], scores: Sequence[float] | None = None, *,
                            categorical: Sequence[str] = ()) -> dict:
    """Profile every column of the training inputs, and the model's scores when given.

    Columns named in ``categorical`` are profiled as categories, the others as numbers.
    """
    unknown = set(categorical) - set(columns)
    if unknown:
        raise ValueError(f"categorical columns not among the columns: {sorted(unknown)}")
    profile = {"features": {
        name: categorical_profile(values) if name in categorical else numeric_profile(values)
        for name, values in columns.items()
    }}
    if scores is not None:
        profile["scores"] = score_profile(scores)
    return profile
