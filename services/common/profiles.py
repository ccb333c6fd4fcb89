"""Reference profiles: a compact description of a training distribution, per feature.

Built when a version is registered (by the client) and compared with live traffic by the
monitor. Numbers get quantile bin edges, the training frequency in each bin and a sample;
categories (low-cardinality codes such as ``is_online``) get each category's frequency; the
prediction scores get a fixed histogram over [0, 1] and a sample.

Training values and live ones are binned by one function (:func:`bin_counts`) at one precision
(:func:`as_model_input`, the FP32 the model reads), and the edges are stored at that precision:
a value on an edge lands in the same bin at registration and in the monitor, so unchanged
traffic has a PSI of ~0. A value the training data repeats across several quantiles (the zeros
of a sparse feature, both values of a 0/1 flag) gets a bin of its own rather than sharing one
with everything else.
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


def as_model_input(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Finite values at the precision the model reads them (FP32 tensors), as float64: a training value and the same
    value logged live then compare equal, and so do a bin edge and a value on it."""
    array = np.asarray(values, dtype=np.float64).astype(np.float32).astype(np.float64)
    return array[np.isfinite(array)]


def bin_counts(edges: Sequence[float] | np.ndarray, values: np.ndarray) -> np.ndarray:
    """Counts per bin, ``[edge_i, edge_i+1)``; values beyond the outer edges fall in the outer bins."""
    inner = np.asarray(edges[1:-1], dtype=np.float64)
    return np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(edges) - 1)


def quantile_edges(data: np.ndarray, bins: int) -> np.ndarray:
    """Quantile bin edges at model precision. A value at two or more quantiles (an atom: the zeros of a sparse
    feature) is closed off by an edge just above it, so it is a bin of its own: merged into one bin with the rest,
    a change in its share could never show."""
    quantiles = as_model_input(np.quantile(data, np.linspace(0.0, 1.0, bins + 1)))
    values, repeats = np.unique(quantiles, return_counts=True)
    above_atoms = np.nextafter(values[repeats > 1].astype(np.float32), np.float32(np.inf)).astype(np.float64)
    edges = np.unique(np.concatenate([values, above_atoms[above_atoms < values[-1]]]))
    if edges.size < 2:
        edges = as_model_input([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def numeric_profile(values: Sequence[float], *, bins: int = 10) -> dict:
    data = as_model_input(values)
    if data.size == 0:
        raise ValueError("cannot profile an empty column")
    edges = quantile_edges(data, bins)
    counts = bin_counts(edges, data)
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
    data = np.clip(as_model_input(scores), 0.0, 1.0)
    edges = as_model_input(np.linspace(0.0, 1.0, SCORE_BINS + 1))
    counts = bin_counts(edges, data)
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
