from services.registry.triton_repository import load_files, triton_config


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
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 200}
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
