"""A small model of the demo's fraud data, its registry metadata and prediction events built from it.

The reference profile is built exactly as ``mlfleet.demo.train`` builds it; live traffic is
drawn from held-out rows of the same distribution (``stationary``) or from the demo's 2020
replay (``shifted``), scored by the same model, so the monitor sees what a gateway would log.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from skl2onnx import to_onnx

from mlfleet.demo.data import generate_dataset, label_column, model_frame
from mlfleet.demo.train import CATEGORICAL_COLUMNS, input_columns, signature
from services.common.profiles import build_reference_profile
from services.common.schemas import PredictionEvent, Variant

ROWS = 40_000
TRAIN_ROWS = 12_000
MOVED = {"amount", "hour_of_day", "is_online", "distance_from_home_km"}
"""The request fields the demo's ``shift`` moves; the entity features stay put."""


@dataclass(frozen=True)
class DemoModel:
    estimator: Pipeline
    onnx: bytes
    metadata: dict
    holdout: pd.DataFrame
    """Rows of the training distribution the model never saw, shuffled."""
    shifted: pd.DataFrame
    """Rows of the demo's ``shift=True`` data set, shuffled."""

    def events(self, rows: pd.DataFrame, *, model: str, version: int, per_event: int = 10,
               variant: Variant = Variant.stable, timestamp: float | None = None) -> list[PredictionEvent]:
        """One event per ``per_event`` rows, with features, scores and labels as the gateway logs them."""
        columns = input_columns()
        x = rows[columns].to_numpy(dtype=np.float64)
        scores = self.estimator.predict_proba(x.astype(np.float32))[:, 1]
        now = time.time() if timestamp is None else timestamp
        events = []
        for start in range(0, len(rows), per_event):
            chunk = slice(start, start + per_event)
            events.append(PredictionEvent(
                request_id=uuid.uuid4().hex, trace_id=uuid.uuid4().hex, model=model, version=version,
                variant=variant, timestamp=now, latency_ms=4.0, instances=len(x[chunk]),
                features=x[chunk].tolist(), feature_names=columns, scores=scores[chunk].tolist(),
                labels=[int(s >= 0.5) for s in scores[chunk]],
            ))
        return events


@cache
def demo_model() -> DemoModel:
    """Trained once per test session (a few seconds)."""
    columns = input_columns()
    frame = model_frame(generate_dataset(seed=11, n_transactions=ROWS)).sample(frac=1.0, random_state=0)
    train, holdout = frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:].reset_index(drop=True)
    x = train[columns].to_numpy(dtype=np.float32)
    y = train[label_column].to_numpy(dtype=np.int64)
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    profile = build_reference_profile({c: x[:, i] for i, c in enumerate(columns)}, estimator.predict_proba(x)[:, 1],
                                      categorical=CATEGORICAL_COLUMNS)
    onnx = to_onnx(estimator, x[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    shifted = model_frame(generate_dataset(seed=11, n_transactions=6000, shift=True)).sample(frac=1.0, random_state=0)
    metadata = {"signature": signature(), "metrics": {"auc": 0.95, "accuracy": 0.95}, "reference_profile": profile,
                "lineage": {"params": {"estimator": "logistic-regression"}}, "description": "monitor test model"}
    return DemoModel(estimator, onnx.SerializeToString(), metadata, holdout, shifted.reset_index(drop=True))
