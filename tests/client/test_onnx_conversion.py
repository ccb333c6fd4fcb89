"""A model converts to the same ONNX bytes in every process, so registering it again finds the version it already is."""

from __future__ import annotations

import os
import subprocess
import sys

CONVERT = """
import hashlib
import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from mlfleet.client.packaging import estimator_to_onnx
x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
model = GradientBoostingClassifier(n_estimators=3, random_state=0).fit(x, (x[:, 0] > 0).astype(int))
print(hashlib.sha256(estimator_to_onnx(model, x)).hexdigest())
"""


def test_a_model_converts_to_the_same_bytes_whatever_the_process_string_hashing():
    """skl2onnx orders the model's opset imports by a set of domain names: under hash seeds 0 and 6 they came out in
    opposite orders, so the demo registered "new" versions of an unchanged model on reruns."""
    digests = {seed: subprocess.run([sys.executable, "-c", CONVERT], env={**os.environ, "PYTHONHASHSEED": seed}, check=True,
                                    capture_output=True, text=True).stdout.strip() for seed in ("0", "6")}
    assert len(digests["0"]) == 64 and digests["0"] == digests["6"], digests
