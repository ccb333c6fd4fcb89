"""Data factories for registry tests: tiny trained classifiers, their ONNX files and metadata."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression


@dataclass(frozen=True)
class TrainedModel:
    estimator: LogisticRegression
    onnx: bytes
    features: np.ndarray


def train_classifier(*, n_features: int = 4, seed: int = 0) -> TrainedModel:
    """A LogisticRegression on synthetic data, exported with skl2onnx (FP32 input, no zipmap)."""
    rng = np.random.RandomState(seed)
    x = rng.randn(200, n_features).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, -1] > 0).astype(np.int64)
    estimator = LogisticRegression().fit(x, y)
    model = to_onnx(estimator, x[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    return TrainedModel(estimator=estimator, onnx=model.SerializeToString(), features=x)


def signature(n_features: int = 4) -> dict[str, Any]:
    return {"inputs": [{"name": f"f{i}", "source": "request", "dtype": "FP32"} for i in range(n_features)]}


def version_metadata(*, n_features: int = 4, auc: float | None = 0.95, accuracy: float | None = 0.9,
                     description: str = "") -> dict[str, Any]:
    metrics = {k: v for k, v in {"auc": auc, "accuracy": accuracy}.items() if v is not None}
    return {
        "signature": signature(n_features),
        "metrics": metrics,
        "reference_profile": {"features": {"f0": {"kind": "numeric", "mean": 0.0}}},
        "lineage": {"dataset_hash": "abc123", "params": {"C": 1.0}, "code_revision": "deadbeef"},
        "description": description,
    }


def upload_parts(onnx_bytes: bytes, metadata: dict[str, Any] | str) -> dict[str, Any]:
    """``files=`` argument of an httpx multipart version upload."""
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    return {"artifact": ("model.onnx", onnx_bytes, "application/octet-stream"), "metadata": (None, text)}


def model_name(prefix: str = "m") -> str:
    """A unique model name (the PostgreSQL database and Triton are shared by the session)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
