import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from pydantic import ValidationError
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from services.common.schemas import Signature
from services.registry.errors import InvalidArtifact
from services.registry.onnx_validation import validate_onnx
from services.registry.schemas import VersionCreate


def test_an_exported_classifier_with_the_right_width_passes(trained):
    validate_onnx(trained.onnx, signature_width=4, n_classes=2)


@pytest.mark.parametrize("artifact", [b"", b"not an onnx model at all", b"\x00\x01\x02garbage" * 10])
def test_bytes_that_are_not_onnx_are_refused(artifact):
    with pytest.raises(InvalidArtifact):
        validate_onnx(artifact, signature_width=4, n_classes=2)


def test_a_width_different_from_the_signature_is_refused(trained):
    with pytest.raises(InvalidArtifact, match="has 4 features but the signature lists 3 inputs"):
        validate_onnx(trained.onnx, signature_width=3, n_classes=2)


def _identity_model(elem_type: int, shape: list) -> bytes:
    x = helper.make_tensor_value_info("x", elem_type, shape)
    y = helper.make_tensor_value_info("y", elem_type, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_double_input_is_refused():
    with pytest.raises(InvalidArtifact, match="float32"):
        validate_onnx(_identity_model(TensorProto.DOUBLE, [None, 4]), signature_width=4, n_classes=2)


def test_an_unknown_width_is_accepted():
    """An identity over [batch, any]: fed one row of 2 inputs, it answers 2 columns, the signature's 2 classes."""
    validate_onnx(_identity_model(TensorProto.FLOAT, [None, None]), signature_width=2, n_classes=2)


def test_a_model_failing_the_checker_is_refused():
    model = onnx.load_model_from_string(_identity_model(TensorProto.FLOAT, [None, 4]))
    model.graph.node[0].op_type = "NoSuchOperator"
    with pytest.raises(InvalidArtifact, match="checker"):
        validate_onnx(model.SerializeToString(), signature_width=4, n_classes=2)


def test_a_model_onnxruntime_cannot_load_is_refused_though_the_checker_passes_it():
    model = onnx.load_model_from_string(_identity_model(TensorProto.FLOAT, [None, 4]))
    model.opset_import[0].version = 999
    onnx.checker.check_model(model)
    with pytest.raises(InvalidArtifact, match="onnxruntime cannot load"):
        validate_onnx(model.SerializeToString(), signature_width=4, n_classes=2)


def test_a_classifier_with_more_classes_than_the_signature_is_refused(trained):
    with pytest.raises(InvalidArtifact, match=r"has shape \[1, 2\] for one row; the signature's 3 classes need \[1, 3\]"):
        validate_onnx(trained.onnx, signature_width=4, n_classes=3)


def test_a_zipmap_output_is_refused_with_how_to_export_it():
    x = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    with_zipmap = to_onnx(model, x[:1], target_opset=17).SerializeToString()
    with pytest.raises(InvalidArtifact, match="zipmap=False"):
        validate_onnx(with_zipmap, signature_width=4, n_classes=2)


def test_a_model_that_fails_on_a_row_of_the_signatures_width_is_refused():
    """A reshape to [-1, 4] behind a dynamic-width input: loadable, but one row of 3 inputs cannot be scored."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    shape = helper.make_tensor("four_wide", TensorProto.INT64, [2], [-1, 4])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "four_wide"], ["y"])], "g", [x], [y], [shape])
    artifact = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with pytest.raises(InvalidArtifact, match="fails on one row of 3 inputs"):
        validate_onnx(artifact, signature_width=3, n_classes=2)


def test_a_model_answering_a_row_of_zeros_with_infinities_is_accepted():
    """log(0) = -inf: a row of zeros is no realistic input, so only the shape of the answer is judged."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([helper.make_node("Log", ["x"], ["y"])], "g", [x], [y])
    artifact = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    validate_onnx(artifact, signature_width=2, n_classes=2)


def test_a_positive_class_index_beyond_the_classes_is_refused_at_registration_only():
    signature = {"inputs": [{"name": "x", "source": "request"}], "output": {"classes": [0, 1], "positive_class_index": 2}}
    with pytest.raises(ValidationError, match="positive_class_index 2 names no class: there are 2"):
        VersionCreate.model_validate({"signature": signature})
    assert Signature.model_validate(signature).output.positive_class_index == 2, "a stored signature still reads"
