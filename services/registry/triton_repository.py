"""Adapter to Triton's model-repository API: push a model's version set, check readiness.

Nothing is shared on disk: every (re)load sends the config and, for each version, the
Python-backend ``model.py`` and the ONNX file. Triton serves exactly the versions of the
last load (``version_policy: specific``), so the whole set is sent every time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as triton_grpc
from tritonclient.utils import InferenceServerException

from services.common.errors import BackendUnavailable
from services.registry.errors import ModelLoadFailed

BACKEND_MODEL_PY = Path(__file__).resolve().parent / "triton_backend" / "model.py"
UNREACHABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"}
WARMUP_ROUNDS = 3
logger = logging.getLogger("mlfleet.registry.triton")


FAULT_INJECTION_PARAMETER = "fault_injection"
"""Config parameter read by ``triton_backend/model.py``: JSON ``{"<version>": {"delay_ms": …, "fail_inference": …}}``."""


def triton_config(model: str, versions: Iterable[int], *, intra_op_threads: int = 1, max_batch_size: int = 64,
                  max_queue_delay_us: int = 200, faults: Mapping[int, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Triton model config serving ``versions`` of ``model`` with the Python backend.

    ``faults`` (version → fault injection options) reach each version's ``model.py`` through
    one config parameter; versions without faults are left out of it.
    """
    parameters = {"intra_op_threads": {"string_value": str(intra_op_threads)}}
    injected = {str(v): dict(f) for v, f in sorted((faults or {}).items()) if f}
    if injected:
        parameters[FAULT_INJECTION_PARAMETER] = {"string_value": json.dumps(injected, sort_keys=True)}
    return {
        "name": model,
        "backend": "python",
        "max_batch_size": max_batch_size,
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1]}],
        "output": [
            {"name": "label", "data_type": "TYPE_INT64", "dims": [1]},
            {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [-1]},
        ],
        "version_policy": {"specific": {"versions": sorted(set(versions))}},
        "dynamic_batching": {"max_queue_delay_microseconds": max_queue_delay_us},
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "parameters": parameters,
    }


def load_files(artifacts: Mapping[int, bytes], backend_model_py: bytes) -> dict[str, bytes]:
    """The ``file:`` entries of a load request: ``<version>/model.py`` and ``<version>/model.onnx``."""
    files = {}
    for version, onnx_bytes in sorted(artifacts.items()):
        files[f"file:{version}/model.py"] = backend_model_py
        files[f"file:{version}/model.onnx"] = onnx_bytes
    return files


class TritonRepository:
    def __init__(self, url: str, *, backend_model_py: bytes, timeout_s: float, load_timeout_s: float,
                 intra_op_threads: int = 1) -> None:
        self.url = url
        self._client = triton_grpc.InferenceServerClient(url)
        self._backend_model_py = backend_model_py
        self._timeout_s = timeout_s
        self._load_timeout_s = load_timeout_s
        self._intra_op_threads = intra_op_threads

    async def load(self, model: str, artifacts: Mapping[int, bytes],
                   faults: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        """Make Triton serve exactly the versions in ``artifacts`` (version → ONNX bytes), and wait until ready."""
        config = triton_config(model, artifacts, intra_op_threads=self._intra_op_threads, faults=faults)
        files = load_files(artifacts, self._backend_model_py)
        try:
            await self._client.load_model(model, config=json.dumps(config), files=files,
                                          client_timeout=self._load_timeout_s)
        except InferenceServerException as exc:
            raise self._error(exc, f"loading {model} versions {sorted(artifacts)}") from None
        not_ready = set(artifacts) - await self.ready_versions(model, artifacts)
        if not_ready:
            raise ModelLoadFailed(f"Triton loaded {model} but versions {sorted(not_ready)} are not ready")

    async def warm(self, model: str, widths: Mapping[int, int], *, rounds: int = WARMUP_ROUNDS) -> None:
        """Run a few inferences of zeros on each version (version → input width), so the first requests a policy
        sends there do not pay the backend's first-run cost; a failing warm-up is logged, never raised."""
        for version, width in sorted(widths.items()):
            request = triton_grpc.InferInput("input", [1, width], "FP32")
            request.set_data_from_numpy(np.zeros((1, width), dtype=np.float32))
            try:
                for _ in range(rounds):
                    await self._client.infer(model, [request], model_version=str(version),
                                             client_timeout=self._timeout_s)
            except InferenceServerException as exc:
                logger.info("warm-up of %s v%d failed: %s", model, version, exc.message())

    async def ready_versions(self, model: str, versions: Iterable[int]) -> set[int]:
        """Which of ``versions`` Triton reports ready."""
        versions = sorted(set(versions))
        checks = [self._client.is_model_ready(model, str(v), client_timeout=self._timeout_s) for v in versions]
        try:
            answers = await asyncio.gather(*checks)
        except InferenceServerException as exc:
            raise self._error(exc, f"checking readiness of {model}") from None
        return {v for v, ready in zip(versions, answers, strict=True) if ready}

    async def live(self) -> bool:
        try:
            return bool(await self._client.is_server_live(client_timeout=self._timeout_s))
        except InferenceServerException:
            return False

    async def close(self) -> None:
        await self._client.close()

    def _error(self, exc: InferenceServerException, what: str) -> BackendUnavailable | ModelLoadFailed:
        if exc.status() in UNREACHABLE:
            logger.warning("Triton at %s unreachable while %s: %s", self.url, what, exc.message())
            return BackendUnavailable(f"Triton at {self.url} is not reachable")
        logger.error("Triton failed %s: %s", what, exc.message())
        return ModelLoadFailed(f"Triton failed {what}: {exc.message()}")
