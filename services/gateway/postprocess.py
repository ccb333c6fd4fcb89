"""Triton's class probabilities → the predictions a client reads."""

from __future__ import annotations

import numpy as np

from services.common.errors import InferenceFailed
from services.common.schemas import SignatureOutput
from services.gateway.schemas import Prediction


def to_predictions(output: SignatureOutput, probabilities: np.ndarray) -> list[Prediction]:
    """``score`` = probability of the positive class; ``label`` = class of the largest probability."""
    n_classes = len(output.classes)
    if probabilities.ndim != 2 or probabilities.shape[1] != n_classes or output.positive_class_index >= n_classes:
        raise InferenceFailed(f"model returned probabilities of shape {list(probabilities.shape)} for {n_classes} classes")
    winners = probabilities.argmax(axis=1)
    rows = probabilities.tolist()
    return [
        Prediction(label=output.classes[winner], score=row[output.positive_class_index], probabilities=row)
        for winner, row in zip(winners.tolist(), rows)
    ]
