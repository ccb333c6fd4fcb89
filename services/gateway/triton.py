"""Inference on Triton over gRPC with one shared ``tritonclient.grpc.aio`` client."""

from __future__ import annotations

import asyncio

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from services.common.errors import BackendUnavailable, InferenceFailed
from services.common.telemetry import trace_headers

INPUT = "input"
"""The tensor contract of every registered version (see the registry's Triton backend)."""

UNAVAILABLE_STATUSES = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.NOT_FOUND", "StatusCode.CANCELLED"}


class TritonInference:
    """Runs one FP32 batch through one model version and returns its probabilities."""

    def __init__(self, url: str, *, timeout_s: float, max_batch_rows: int) -> None:
        self._client = grpcclient.InferenceServerClient(url)
        self._timeout_s = timeout_s
        self._max_batch_rows = max_batch_rows

    async def probabilities(self, model: str, version: int, tensor: np.ndarray, *, output: str) -> np.ndarray:
        """Like :meth:`infer`; a tensor longer than Triton's ``max_batch_size`` goes in several calls."""
        if len(tensor) <= self._max_batch_rows:
            return await self.infer(model, version, tensor, output=output)
        parts = [tensor[start:start + self._max_batch_rows] for start in range(0, len(tensor), self._max_batch_rows)]
        answers = await asyncio.gather(*(self.infer(model, version, part, output=output) for part in parts))
        return np.concatenate(answers)

    async def infer(self, model: str, version: int, tensor: np.ndarray, *, output: str) -> np.ndarray:
        """Raise ``BackendUnavailable`` (503) when Triton or the version cannot answer in time,
        ``InferenceFailed`` (502) when the model itself fails. The active span's ``traceparent`` goes
        along, so Triton's own spans (when it traces) join the caller's trace."""
        request_input = grpcclient.InferInput(INPUT, list(tensor.shape), "FP32")
        request_input.set_data_from_numpy(tensor)
        try:
            result = await self._client.infer(
                model, [request_input], model_version=str(version),
                outputs=[grpcclient.InferRequestedOutput(output)], client_timeout=self._timeout_s,
                headers=trace_headers(),
            )
        except InferenceServerException as exc:
            if exc.status() in UNAVAILABLE_STATUSES:
                raise BackendUnavailable(f"Triton could not serve {model} v{version}: {exc.message()}") from None
            raise InferenceFailed(f"{model} v{version} failed: {exc.message()}") from None
        probabilities = result.as_numpy(output)
        if probabilities is None:
            raise InferenceFailed(f"{model} v{version} returned no {output!r} output")
        return probabilities

    async def live(self) -> bool:
        try:
            return await self._client.is_server_live(client_timeout=self._timeout_s)
        except InferenceServerException:
            return False

    async def close(self) -> None:
        await self._client.close()
