"""Train the demo's fraud models and package them as registry versions.

Two versions, as a team would ship them: v1 a logistic regression, v2 gradient boosting.
Each becomes an ONNX file (skl2onnx, no zipmap), a signature in tensor order, holdout
metrics, a reference profile of its training inputs and lineage.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skl2onnx import to_onnx

from mlfleet.demo.data import FraudDataset, entity_columns, feature_columns, label_column, model_frame, request_columns
from services.common.profiles import build_reference_profile



@dataclass
class TrainedVersion:
    name: str
    onnx: bytes
    metadata: dict


def input_columns() -> list[str]:
    return list(request_columns) + [feature.split(":", 1)[1] for feature in feature_columns]


def signature() -> dict:
    inputs = [{"name": name, "source": "request", "dtype": "FP32"} for name in request_columns]
    inputs += [{"name": f.split(":", 1)[1], "source": "feast", "feature": f, "dtype": "FP32"} for f in feature_columns]
    return {"inputs": inputs, "entities": list(entity_columns), "output": {"classes": [0, 1], "positive_class_index": 1}}


def dataset_hash(frame: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).values.tobytes()).hexdigest()


def code_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _estimators(seed: int) -> list[tuple[str, object, dict]]:
    lr_params = {"C": 1.0, "max_iter": 500}
    gb_params = {"n_estimators": 120, "max_depth": 3, "learning_rate": 0.1, "random_state": seed}
    return [
        ("logistic-regression", make_pipeline(StandardScaler(), LogisticRegression(**lr_params)), lr_params),
        ("gradient-boosting", GradientBoostingClassifier(**gb_params), gb_params),
    ]


def train_versions(dataset: FraudDataset, *, seed: int = 7) -> list[TrainedVersion]:
    frame = model_frame(dataset)
    columns = input_columns()
    x = frame[columns].to_numpy(dtype=np.float32)
    y = frame[label_column].to_numpy(dtype=np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    digest = dataset_hash(frame[columns + [label_column]])
    versions = []
    for name, estimator, params in _estimators(seed):
        estimator.fit(x_train, y_train)
        scores = estimator.predict_proba(x_test)[:, 1]
        predicted = (scores >= 0.5).astype(np.int64)
        metrics = {
            "auc": float(roc_auc_score(y_test, scores)),
            "accuracy": float(accuracy_score(y_test, predicted)),
            "precision": float(precision_score(y_test, predicted, zero_division=0)),
            "recall": float(recall_score(y_test, predicted, zero_division=0)),
            "f1": float(f1_score(y_test, predicted, zero_division=0)),
        }
        onnx_model = to_onnx(estimator, x_train[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
        train_scores = estimator.predict_proba(x_train)[:, 1]
        profile = build_reference_profile({c: x_train[:, i] for i, c in enumerate(columns)}, train_scores)
        metadata = {
            "signature": signature(),
            "metrics": metrics,
            "reference_profile": profile,
            "lineage": {"dataset_hash": digest, "params": {"estimator": name, **params, "seed": seed},
                        "code_revision": code_revision()},
            "description": f"demo {name} trained on {len(x_train)} transactions",
        }
        versions.append(TrainedVersion(name=name, onnx=onnx_model.SerializeToString(), metadata=metadata))
    return versions
