"""Checks that an uploaded artifact is an ONNX model Triton's backend can serve for its signature."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
from google.protobuf.message import DecodeError

from services.registry.errors import InvalidArtifact
from services.registry.onnx_io import label_and_probabilities


def validate_onnx(artifact: bytes, *, signature_width: int, n_classes: int) -> None:
    """Raise :class:`InvalidArtifact` unless ``artifact`` is a valid ONNX model with one FP32 input
    whose width, when statically known, equals the number of signature inputs, that onnxruntime (what
    Triton's backend runs it with) can load (the ONNX checker passes models it cannot, e.g. of an opset it
    does not know), and that scores one row of the signature's width into probabilities of its ``n_classes``
    classes (of any value: a row of zeros is no realistic input, and a model taking a log of a feature answers it
    with infinities). Each of these would otherwise fail only when traffic is set, or on every request
    once it is."""
    try:
        model = onnx.load_model_from_string(artifact)
    except (DecodeError, ValueError):
        raise InvalidArtifact("the artifact does not parse as an ONNX model") from None
    if not model.graph.node or not model.graph.output:
        raise InvalidArtifact("the artifact has no ONNX graph (no nodes or no outputs)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise InvalidArtifact(f"the ONNX checker rejects the model: {first_line}") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise InvalidArtifact(f"the model must take exactly one input tensor; it takes {len(inputs)}")
    _check_input(inputs[0], signature_width)
    _check_scores_a_row(_loaded(artifact), signature_width, n_classes)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def _loaded(artifact: bytes) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(artifact, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error classes (Fail, InvalidGraph, NotImplemented, ...)
        raise InvalidArtifact(f"onnxruntime cannot load the model: {_first_line(exc)}") from None


def _check_scores_a_row(session: onnxruntime.InferenceSession, width: int, n_classes: int) -> None:
    """Score one row of zeros, reading the outputs Triton's backend reads (:func:`label_and_probabilities`)."""
    label, proba = label_and_probabilities([o.name for o in session.get_outputs()])
    try:
        _, probabilities = session.run([label, proba], {session.get_inputs()[0].name: np.zeros((1, width), np.float32)})
    except Exception as exc:  # onnxruntime's own error classes
        raise InvalidArtifact(f"the model fails on one row of {width} inputs: {_first_line(exc)}") from None
    try:
        scores = np.asarray(probabilities, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidArtifact(f"the model's output {proba!r} is not a tensor of probabilities (a ZipMap of "
                              "scikit-learn's converter? export with zipmap=False)") from None
    if scores.shape != (1, n_classes):
        raise InvalidArtifact(f"the model's output {proba!r} has shape {list(scores.shape)} for one row; the "
                              f"signature's {n_classes} classes need [1, {n_classes}]")


def _check_input(value: onnx.ValueInfoProto, signature_width: int) -> None:
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or tensor.elem_type != onnx.TensorProto.FLOAT:
        raise InvalidArtifact(f"the model's input {value.name!r} must be a float32 tensor")
    if not tensor.HasField("shape"):
        return
    dims = tensor.shape.dim
    if len(dims) != 2:
        raise InvalidArtifact(f"the model's input {value.name!r} must be [batch, features]; it has rank {len(dims)}")
    width = dims[1]
    if width.HasField("dim_value") and width.dim_value != signature_width:
        raise InvalidArtifact(
            f"the model's input {value.name!r} has {width.dim_value} features but the signature lists {signature_width} inputs"
        )
