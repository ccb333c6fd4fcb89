"""An ONNX artifact made ready for Triton's native ``onnxruntime_onnx`` platform.

The gateway speaks one tensor contract to every model: input ``input`` FP32 ``[batch, features]``,
outputs ``label`` INT64 and ``probabilities`` FP32 ``[batch, classes]``. The Python backend maps
the ONNX graph's own names at run time; the native platform cannot, so the graph is renamed when
it is pushed to Triton — its one input becomes ``input``, the output named ``label`` (else the
first) ``label``, the one named ``probabilities`` or ``output_probability`` (else the last)
``probabilities``, the same choice as ``triton_backend/model.py``. The stored artifact is
never changed; renaming is deterministic, so every push sends the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from services.registry.errors import ModelLoadFailed

INPUT, LABEL, PROBABILITIES = "input", "label", "probabilities"
PROBABILITY_NAMES = ("probabilities", "output_probability")
TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.DOUBLE: "TYPE_FP64", onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.BOOL: "TYPE_BOOL", onnx.TensorProto.STRING: "TYPE_STRING",
}
REQUIRED_TYPES = {INPUT: "TYPE_FP32", LABEL: "TYPE_INT64", PROBABILITIES: "TYPE_FP32"}


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of the renamed graph: its Triton data type and its dims after the batch dimension (-1: any)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class NativeModel:
    onnx: bytes
    input: TensorSpec
    label: TensorSpec
    probabilities: TensorSpec


def label_and_probabilities(names: Sequence[str]) -> tuple[str, str]:
    """Which of a graph's outputs (in order) are the label and the probabilities: ``label`` (else the first) and
    ``probabilities`` or ``output_probability`` (else the last); ``triton_backend/model.py`` picks them alike."""
    return (next((n for n in names if n == LABEL), names[0]),
            next((n for n in names if n in PROBABILITY_NAMES), names[-1]))


def native_model(artifact: bytes) -> NativeModel:
    """The artifact with the gateway's tensor names, and the specs Triton's config needs; raises
    :class:`ModelLoadFailed` when the graph cannot be served under that contract."""
    model = onnx.load_model_from_string(artifact)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    outputs = list(graph.output)
    if len(inputs) != 1 or len(outputs) < 2:
        raise ModelLoadFailed("the native ONNX platform needs one input and a label and a probabilities output; "
                              f"the graph has {len(inputs)} inputs and {len(outputs)} outputs")
    label, probabilities = label_and_probabilities([o.name for o in outputs])
    if label == probabilities:
        raise ModelLoadFailed(f"the graph's output {label!r} cannot be both label and probabilities")
    renames = {inputs[0].name: INPUT, label: LABEL, probabilities: PROBABILITIES}
    _rename(graph, renames)
    specs = {v.name: _spec(v) for v in (*graph.input, *graph.output) if v.name in REQUIRED_TYPES}
    for name, data_type in REQUIRED_TYPES.items():
        if specs[name].data_type != data_type:
            raise ModelLoadFailed(f"the graph's {name} tensor is {specs[name].data_type}; the gateway needs {data_type}")
    return NativeModel(model.SerializeToString(), specs[INPUT], specs[LABEL], specs[PROBABILITIES])


def _rename(graph: onnx.GraphProto, renames: dict[str, str]) -> None:
    """Rename tensors everywhere they appear in the graph (not in subgraphs: classical ML graphs have none)."""
    renames = {old: new for old, new in renames.items() if old != new}
    taken = ({n for node in graph.node for n in (*node.input, *node.output)}
             | {v.name for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer)})
    clashes = sorted(set(renames.values()) & (taken - set(renames)))
    if clashes:
        raise ModelLoadFailed(f"the graph already has other tensors named {clashes}")
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = renames.get(value.name, value.name)


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    data_type = TRITON_TYPES.get(tensor.elem_type, f"ONNX type {tensor.elem_type}")
    if not tensor.HasField("shape") or not tensor.shape.dim:
        raise ModelLoadFailed(f"the graph's {value.name} tensor has no batch dimension")
    batch, *rest = tensor.shape.dim
    if batch.HasField("dim_value"):
        raise ModelLoadFailed(f"the graph's {value.name} tensor has a fixed batch size {batch.dim_value}; "
                              "Triton batches requests, so it must be dynamic")
    return TensorSpec(value.name, data_type, tuple(d.dim_value if d.HasField("dim_value") else -1 for d in rest))
