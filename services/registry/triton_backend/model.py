"""Triton Python-backend model that serves any registered ONNX classifier with onnxruntime.

The registry pushes this file and ``model.onnx`` for every version through Triton's
repository API. Triton hands us several requests at once when dynamic batching is on:
we concatenate them, run onnxruntime once, and split the outputs back.

Tensor contract: input ``input`` FP32 ``[batch, n_features]``; outputs ``label`` INT64
``[batch, 1]`` and ``probabilities`` FP32 ``[batch, n_classes]``.

Fault injection, to rehearse rollouts: the config parameter ``fault_injection`` holds JSON
``{"<version>": {"delay_ms": 200, "fail_inference": true}}`` (set from a version's
``fault_injection`` metadata by the registry). A version listed there waits ``delay_ms``
before answering each batch and/or fails every inference; other versions are untouched.
"""

import json
import os
import time

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1") or 1)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self.onnx_input = self.session.get_inputs()[0].name
        outputs = self.session.get_outputs()
        self.label_output = next((o.name for o in outputs if o.name == "label"), outputs[0].name)
        self.proba_output = next(
            (o.name for o in outputs if o.name in ("probabilities", "output_probability")), outputs[-1].name
        )
        faults = json.loads(params.get("fault_injection") or "{}").get(str(args["model_version"]), {})
        self.delay_s = max(float(faults.get("delay_ms", 0)), 0.0) / 1000
        self.fail = bool(faults.get("fail_inference", False))

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, "input").as_numpy().astype(np.float32, copy=False) for r in requests]
        sizes = [a.shape[0] for a in arrays]
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            error = pb_utils.TritonError("this version is configured to fail")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        try:
            batch = np.concatenate(arrays, axis=0) if len(arrays) > 1 else arrays[0]
            labels, probabilities = self.session.run([self.label_output, self.proba_output], {self.onnx_input: batch})
        except Exception as exc:  # a malformed request must not take its batch neighbours down silently
            return [self._execute_one(a, exc) for a in arrays]
        labels = np.asarray(labels).astype(np.int64).reshape(-1, 1)
        probabilities = np.asarray(probabilities, dtype=np.float32)
        responses, start = [], 0
        for size in sizes:
            end = start + size
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("label", labels[start:end]),
                        pb_utils.Tensor("probabilities", probabilities[start:end]),
                    ]
                )
            )
            start = end
        return responses

    def _execute_one(self, array, batch_error):
        try:
            labels, probabilities = self.session.run([self.label_output, self.proba_output], {self.onnx_input: array})
        except Exception as exc:  # alone, a request fails only by its own input: the caller's error
            error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
            return pb_utils.InferenceResponse(output_tensors=[], error=error)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("label", np.asarray(labels).astype(np.int64).reshape(-1, 1)),
                pb_utils.Tensor("probabilities", np.asarray(probabilities, dtype=np.float32)),
            ]
        )

    def finalize(self):
        self.session = None
