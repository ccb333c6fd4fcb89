"""Adapter to Triton's model-repository API: push a model's version set, check readiness.

Nothing is shared on disk: every (re)load sends the config and, for each version, the
Python-backend ``model.py`` and the ONNX file — or, on the native ``onnxruntime_onnx``
platform (``triton_platform: onnxruntime``), only the ONNX file renamed to the gateway's
tensor names (:mod:`services.registry.onnx_io`). Triton serves exactly the versions of the
last load (``version_policy: specific``), so the whole set is sent every time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tritonclient.grpc.aio as triton_grpc
from tritonclient.utils import InferenceServerException

from services.common.errors import BackendUnavailable
from services.registry.errors import ModelLoadFailed
from services.registry.onnx_io import NativeModel, TensorSpec, native_model

BACKEND_MODEL_PY = Path(__file__).resolve().parent / "triton_backend" / "model.py"
UNREACHABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"}
WARMUP_ROUNDS = 3
logger = logging.getLogger("mlfleet.registry.triton")


FAULT_INJECTION_PARAMETER = "fault_injection"
"""Config parameter read by ``triton_backend/model.py``: JSON ``{"<version>": {"delay_ms": …, "fail_inference": …}}``."""


PYTHON_BACKEND_QUEUE_DELAY_US = 0
"""Dynamic-batching delay of the Python backend: the best of ``make triton-delay`` (single-row requests straight to
Triton on 2 CPU cores, ``triton-delay-20261127-111717.json``). At 16 connections 0 µs served 13,311 requests/s
against 12,553 for 50 and 12,669 for 100 (within noise in the sweep before it: requests that queue while the
instance is busy are batched whatever the delay); at one connection 3,102 at p50 0.31 ms against 2,281 at 0.42 ms
for 50 µs, a wait no other request ever shortens there. The gateway batches its own requests, and with its default
of one batch in flight per version a gateway sends a version one call at a time (a request larger than a batch
goes in several), so a delay mostly lengthens its calls. A second instance or a second onnxruntime thread lost
throughput."""


def triton_config(model: str, versions: Iterable[int], *, intra_op_threads: int = 1, max_batch_size: int = 64,
                  max_queue_delay_us: int = PYTHON_BACKEND_QUEUE_DELAY_US, faults: Mapping[int, Mapping[str, Any]] | None = None) -> dict[str, Any]:
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


def onnxruntime_config(model: str, versions: Mapping[int, NativeModel], *, gpu: bool, intra_op_threads: int = 1,
                       max_batch_size: int = 64, max_queue_delay_us: int = 200) -> dict[str, Any]:
    """Triton model config serving ``versions`` (version → renamed graph) on the native ONNX Runtime platform.

    Tensor types and dims come from the graphs; a dim the versions disagree on is -1. A label
    without dims after the batch (scikit-learn's ``[batch]``) is reshaped to ``[batch, 1]``,
    as the Python backend returns it.
    """
    graphs = [versions[v] for v in sorted(versions)]
    label = _merged([g.label for g in graphs])
    label_output = {"name": label.name, "data_type": label.data_type, "dims": list(label.dims)}
    if not label.dims:
        label_output |= {"dims": [1], "reshape": {"shape": []}}
    return {
        "name": model,
        "platform": "onnxruntime_onnx",
        "max_batch_size": max_batch_size,
        "input": [_tensor(_merged([g.input for g in graphs]))],
        "output": [label_output, _tensor(_merged([g.probabilities for g in graphs]))],
        "version_policy": {"specific": {"versions": sorted(versions)}},
        "dynamic_batching": {"max_queue_delay_microseconds": max_queue_delay_us},
        "instance_group": [{"kind": "KIND_GPU" if gpu else "KIND_CPU", "count": 1}],
        "parameters": {"intra_op_thread_count": {"string_value": str(intra_op_threads)}},
    }


def _merged(specs: list[TensorSpec]) -> TensorSpec:
    """One spec for a tensor of every version: -1 where their dims differ."""
    first = specs[0]
    if any(len(s.dims) != len(first.dims) or s.data_type != first.data_type for s in specs):
        raise ModelLoadFailed(f"the versions' {first.name} tensors differ in rank or type; "
                              "one Triton config cannot serve them together")
    return TensorSpec(first.name, first.data_type,
                      tuple(d if all(s.dims[i] == d for s in specs) else -1 for i, d in enumerate(first.dims)))


def _tensor(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "data_type": spec.data_type, "dims": list(spec.dims)}


def onnxruntime_files(versions: Mapping[int, NativeModel]) -> dict[str, bytes]:
    """The ``file:`` entries of a native load request: ``<version>/model.onnx`` only."""
    return {f"file:{version}/model.onnx": graph.onnx for version, graph in sorted(versions.items())}


def load_files(artifacts: Mapping[int, bytes], backend_model_py: bytes) -> dict[str, bytes]:
    """The ``file:`` entries of a load request: ``<version>/model.py`` and ``<version>/model.onnx``."""
    files = {}
    for version, onnx_bytes in sorted(artifacts.items()):
        files[f"file:{version}/model.py"] = backend_model_py
        files[f"file:{version}/model.onnx"] = onnx_bytes
    return files


def load_request(model: str, artifacts: Mapping[int, bytes], *, platform: Literal["python", "onnxruntime"],
                 gpu: bool, backend_model_py: bytes, intra_op_threads: int = 1,
                 faults: Mapping[int, Mapping[str, Any]] | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The config and files that make Triton serve ``artifacts`` (version → ONNX bytes) on ``platform``."""
    if platform == "python":
        return (triton_config(model, artifacts, intra_op_threads=intra_op_threads, faults=faults),
                load_files(artifacts, backend_model_py))
    if any((faults or {}).values()):
        raise ModelLoadFailed("fault injection needs the Python backend (triton_platform: python)")
    graphs = {version: native_model(artifact) for version, artifact in artifacts.items()}
    return (onnxruntime_config(model, graphs, gpu=gpu, intra_op_threads=intra_op_threads),
            onnxruntime_files(graphs))


class TritonRepository:
    def __init__(self, url: str, *, backend_model_py: bytes, timeout_s: float, load_timeout_s: float,
                 intra_op_threads: int = 1, platform: Literal["python", "onnxruntime"] = "python",
                 gpu: bool = False) -> None:
        self.url = url
        self._client = triton_grpc.InferenceServerClient(url)
        self._backend_model_py = backend_model_py
        self._timeout_s = timeout_s
        self._load_timeout_s = load_timeout_s
        self._intra_op_threads = intra_op_threads
        self._platform = platform
        self._gpu = gpu

    async def load(self, model: str, artifacts: Mapping[int, bytes],
                   faults: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        """Make Triton serve exactly the versions in ``artifacts`` (version → ONNX bytes), and wait until ready."""
        config, files = await asyncio.to_thread(
            load_request, model, artifacts, platform=self._platform, gpu=self._gpu,
            backend_model_py=self._backend_model_py, intra_op_threads=self._intra_op_threads, faults=faults)
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

    async def live(self, *, timeout_s: float | None = None) -> bool:
        """Whether Triton answers as live within ``timeout_s`` (default: the client's deadline)."""
        try:
            return bool(await self._client.is_server_live(client_timeout=timeout_s or self._timeout_s))
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
