"""Triton configs and load files: the Python backend (served here) and the native ONNX Runtime platform.

The CPU Triton of this repository ships only the Python backend, so the native platform is checked
at the config and file level, and its renamed graphs are run with onnxruntime itself.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType

from services.registry.errors import ModelLoadFailed
from services.registry.onnx_io import native_model
from services.registry.settings import RegistrySettings
from services.registry.triton_repository import load_files, load_request, triton_config
from tests.registry.factories import train_classifier


def test_config_serves_the_given_versions_with_the_python_backend():
    config = triton_config("fraud", [3, 1, 3], intra_op_threads=2)
    assert config["name"] == "fraud"
    assert config["backend"] == "python"
    assert config["max_batch_size"] == 64
    assert config["version_policy"] == {"specific": {"versions": [1, 3]}}
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1]}]
    assert config["output"] == [
        {"name": "label", "data_type": "TYPE_INT64", "dims": [1]},
        {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [-1]},
    ]
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 0}  # batching on, no added wait
    assert config["instance_group"] == [{"kind": "KIND_CPU", "count": 1}]
    assert config["parameters"] == {"intra_op_threads": {"string_value": "2"}}


def test_every_version_gets_the_backend_and_its_own_onnx_file():
    files = load_files({2: b"two", 1: b"one"}, b"backend")
    assert files == {
        "file:1/model.py": b"backend",
        "file:1/model.onnx": b"one",
        "file:2/model.py": b"backend",
        "file:2/model.onnx": b"two",
    }


def test_fault_injection_reaches_only_the_versions_that_have_it():
    config = triton_config("fraud", [1, 2, 3], faults={2: {"delay_ms": 150, "fail_inference": False}, 3: {}})
    assert config["parameters"]["fault_injection"] == {"string_value": '{"2": {"delay_ms": 150, "fail_inference": false}}'}
    assert "fault_injection" not in triton_config("fraud", [1], faults={})["parameters"]


def custom_names(n_features: int = 4, seed: int = 0) -> tuple[bytes, object, np.ndarray]:
    """A classifier exported with skl2onnx's default names: input `float_input`, outputs `output_label`/`output_probability`."""
    trained = train_classifier(n_features=n_features, seed=seed)
    graph = convert_sklearn(trained.estimator, initial_types=[("float_input", FloatTensorType([None, n_features]))],
                            options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    return graph.SerializeToString(), trained.estimator, trained.features


def test_native_config_takes_types_and_dims_from_the_graphs():
    config, files = load_request("fraud", {2: custom_names(seed=1)[0], 1: train_classifier().onnx}, platform="onnxruntime",
                                 gpu=True, backend_model_py=b"unused", intra_op_threads=2)
    assert config["platform"] == "onnxruntime_onnx" and "backend" not in config
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["output"] == [
        {"name": "label", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}},
        {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [2]},
    ]
    assert config["instance_group"] == [{"kind": "KIND_GPU", "count": 1}]
    assert config["version_policy"] == {"specific": {"versions": [1, 2]}}
    assert config["parameters"] == {"intra_op_thread_count": {"string_value": "2"}}
    assert sorted(files) == ["file:1/model.onnx", "file:2/model.onnx"]


def test_versions_of_different_widths_share_a_config_with_a_free_dim():
    config, _ = load_request("fraud", {1: train_classifier(n_features=4).onnx, 2: train_classifier(n_features=6).onnx},
                             platform="onnxruntime", gpu=False, backend_model_py=b"unused")
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1]}]
    assert config["instance_group"] == [{"kind": "KIND_CPU", "count": 1}]


def test_the_pushed_graph_answers_under_the_gateway_names_like_the_original():
    artifact, estimator, features = custom_names()
    assert [i.name for i in onnx.load_model_from_string(artifact).graph.input] == ["float_input"]
    _, files = load_request("fraud", {1: artifact}, platform="onnxruntime", gpu=False, backend_model_py=b"unused")
    session = ort.InferenceSession(files["file:1/model.onnx"], providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    label, probabilities = session.run(["label", "probabilities"], {"input": features[:20]})
    np.testing.assert_array_equal(label, estimator.predict(features[:20]))
    np.testing.assert_allclose(probabilities, estimator.predict_proba(features[:20]), atol=1e-6)
    assert load_request("fraud", {1: artifact}, platform="onnxruntime", gpu=False,
                        backend_model_py=b"unused")[1] == files, "renaming is deterministic"


def test_graphs_the_gateway_cannot_read_are_refused_before_triton():
    graph = onnx.load_model_from_string(train_classifier().onnx)
    del graph.graph.output[1]
    with pytest.raises(ModelLoadFailed, match="a label and a probabilities output"):
        native_model(graph.SerializeToString())
    with pytest.raises(ModelLoadFailed, match="fault injection needs the Python backend"):
        load_request("fraud", {1: train_classifier().onnx}, platform="onnxruntime", gpu=False, backend_model_py=b"",
                     faults={1: {"delay_ms": 10}})


def test_gpu_needs_the_native_platform():
    assert RegistrySettings(triton_platform="onnxruntime", triton_gpu=True).triton_gpu
    with pytest.raises(ValueError, match="triton_gpu needs triton_platform 'onnxruntime'"):
        RegistrySettings(triton_gpu=True)
