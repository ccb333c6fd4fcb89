"""An MLServer custom runtime serving the same ONNX classifier as Triton (1-thread onnxruntime)."""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxClassifier(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(self.settings.parameters.uri, sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        batch = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        _, probabilities = self._session.run(None, {self._input: batch})
        output = NumpyCodec.encode_output("probabilities", np.asarray(probabilities, dtype=np.float32))
        return InferenceResponse(model_name=self.name, outputs=[output])
