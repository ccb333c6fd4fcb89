"""The Triton delay sweep (``benchmarks/triton_delay.py``): each copy differs from the registry's config in its
delay only, and runs are averaged per delay and connection count."""

from __future__ import annotations

from benchmarks.triton_delay import delay_config, summarize
from services.registry.triton_repository import BACKEND_MODEL_PY, load_request


def test_a_copy_is_the_registrys_config_with_only_its_delay_changed():
    registry_config, registry_files = load_request("delay-250", {1: b"onnx"}, platform="python", gpu=False,
                                                   backend_model_py=BACKEND_MODEL_PY.read_bytes())
    name, config, files = delay_config(b"onnx", 250)
    assert name == "delay-250"
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 250}
    assert {k: v for k, v in config.items() if k != "dynamic_batching"} == \
           {k: v for k, v in registry_config.items() if k != "dynamic_batching"}
    assert files == registry_files


def test_runs_are_averaged_per_delay_and_connections():
    runs = [{"delay_us": 0, "connections": 1, "requests_per_s": 3000.0, "p50_ms": 0.3},
            {"delay_us": 0, "connections": 1, "requests_per_s": 3200.0, "p50_ms": 0.5},
            {"delay_us": 50, "connections": 1, "requests_per_s": 2300.0, "p50_ms": 0.42},
            {"delay_us": 0, "connections": 16, "requests_per_s": 12000.0, "p50_ms": 1.2}]
    summary = summarize(runs)
    assert list(summary) == ["0 µs, c=1", "0 µs, c=16", "50 µs, c=1"]
    assert summary["0 µs, c=1"] == {"requests_per_s_mean": 3100.0, "p50_ms_mean": 0.4, "runs": 2}
    assert summary["50 µs, c=1"]["runs"] == 1
