import onnx
import pytest
from onnx import TensorProto, helper

from services.registry.errors import InvalidArtifact
from services.registry.onnx_validation import validate_onnx


def test_an_exported_classifier_with_the_right_width_passes(trained):
    validate_onnx(trained.onnx, signature_width=4)


@pytest.mark.parametrize("artifact", [b"", b"not an onnx model at all", b"\x00\x01\x02garbage" * 10])
def test_bytes_that_are_not_onnx_are_refused(artifact):
    with pytest.raises(InvalidArtifact):
        validate_onnx(artifact, signature_width=4)


def test_a_width_different_from_the_signature_is_refused(trained):
    with pytest.raises(InvalidArtifact, match="has 4 features but the signature lists 3 inputs"):
        validate_onnx(trained.onnx, signature_width=3)


def _identity_model(elem_type: int, shape: list) -> bytes:
    x = helper.make_tensor_value_info("x", elem_type, shape)
    y = helper.make_tensor_value_info("y", elem_type, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_double_input_is_refused():
    with pytest.raises(InvalidArtifact, match="float32"):
        validate_onnx(_identity_model(TensorProto.DOUBLE, [None, 4]), signature_width=4)


def test_an_unknown_width_is_accepted():
    validate_onnx(_identity_model(TensorProto.FLOAT, [None, None]), signature_width=7)


def test_a_model_failing_the_checker_is_refused():
    model = onnx.load_model_from_string(_identity_model(TensorProto.FLOAT, [None, 4]))
    model.graph.node[0].op_type = "NoSuchOperator"
    with pytest.raises(InvalidArtifact, match="checker"):
        validate_onnx(model.SerializeToString(), signature_width=4)


def test_a_model_onnxruntime_cannot_load_is_refused_though_the_checker_passes_it():
    model = onnx.load_model_from_string(_identity_model(TensorProto.FLOAT, [None, 4]))
    model.opset_import[0].version = 999
    onnx.checker.check_model(model)
    with pytest.raises(InvalidArtifact, match="onnxruntime cannot load"):
        validate_onnx(model.SerializeToString(), signature_width=4)
