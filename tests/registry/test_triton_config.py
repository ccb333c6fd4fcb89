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


def test_fault_injection_reaches_only_the_versions_that_have_it():
    config = triton_config("fraud", [1, 2, 3], faults={2: {"delay_ms": 150, "fail_inference": False}, 3: {}})
    assert config["parameters"]["fault_injection"] == {"string_value": '{"2": {"delay_ms": 150, "fail_inference": false}}'}
    assert "fault_injection" not in triton_config("fraud", [1], faults={})["parameters"]
