"""A BentoML service serving the same ONNX classifier as Triton (1-thread onnxruntime)."""

import os

import bentoml
import numpy as np
import onnxruntime as ort


@bentoml.service(workers=1)
class FraudClassifier:
    def __init__(self) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.environ["MLFLEET_PEER_MODEL"], sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    @bentoml.api
    async def predict(self, input: np.ndarray) -> np.ndarray:
        _, probabilities = self.session.run(None, {self.input_name: input.astype(np.float32, copy=False)})
        return np.asarray(probabilities, dtype=np.float32)
