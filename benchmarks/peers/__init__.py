"""Peer model servers a user would pick instead of mlfleet, serving the same ONNX model.

Each runs in a virtual environment of its own (``.venv-peers/<name>``, created with uv on
first use from ``benchmarks/peers/<name>/requirements.txt``) so its pins never touch the fleet's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mlfleet.runtime.processes import start_process, wait_serving

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def peer_env(name: str) -> Path:
    """The peer's virtual environment, installed on first use."""
    env = ROOT / ".venv-peers" / name
    marker = env / ".installed"
    requirements = HERE / name / "requirements.txt"
    if marker.exists() and marker.stat().st_mtime >= requirements.stat().st_mtime:
        return env
    uv = Path(sys.executable).parent / "uv"
    print(f"==> installing peer {name} into {env}")
    subprocess.run([str(uv), "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(env)], check=True)
    subprocess.run([str(uv), "pip", "install", "--quiet", "--python", str(env / "bin" / "python"),
                    "-r", str(requirements)], check=True)
    marker.touch()
    return env


@dataclass
class Peer:
    name: str
    url: str
    body: bytes
    process: subprocess.Popen


MLSERVER_DEFAULT_WORKERS = 1
"""MLServer's default and documented setting: inference in one worker process beside the HTTP server ("By default,
MLServer will spin up a pool with only one worker process to run inference", docs: Parallel Inference)."""


def start_mlserver(onnx_path: Path, vector: list[float], *, port: int, grpc_port: int, metrics_port: int,
                   workdir: Path, parallel_workers: int = MLSERVER_DEFAULT_WORKERS) -> Peer:
    """MLServer with ``parallel_workers`` inference processes; 0 infers in the server's own process (fastest at one
    connection here, not its recommended setting). Named ``mlserver`` at its default, else ``mlserver pw=<n>``."""
    env = peer_env("mlserver")
    model_dir = workdir / f"mlserver-{parallel_workers}"
    shutil.rmtree(model_dir, ignore_errors=True)
    (model_dir / "fraud").mkdir(parents=True)
    shutil.copy(onnx_path, model_dir / "fraud" / "model.onnx")
    shutil.copy(HERE / "mlserver" / "runtime.py", model_dir / "fraud" / "runtime.py")
    (model_dir / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "parallel_workers": parallel_workers, "debug": False,
    }))
    (model_dir / "fraud" / "model-settings.json").write_text(json.dumps({
        "name": "fraud", "implementation": "runtime.OnnxClassifier", "parameters": {"uri": str((model_dir / "fraud" / "model.onnx").resolve())},
    }))
    log_file = workdir / f"mlserver-{parallel_workers}.log"
    process = start_process([str(env / "bin" / "mlserver"), "start", str(model_dir)], log_file=log_file,
                            cwd=model_dir)
    wait_serving(process, f"http://127.0.0.1:{port}/v2/models/fraud/ready", timeout_s=120, what="mlserver",
               log_file=log_file)
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, len(vector)], "datatype": "FP32", "data": vector}]})
    name = "mlserver" if parallel_workers == MLSERVER_DEFAULT_WORKERS else f"mlserver pw={parallel_workers}"
    return Peer(name, f"http://127.0.0.1:{port}/v2/models/fraud/infer", body.encode(), process)


def start_bentoml(onnx_path: Path, vector: list[float], *, port: int, workdir: Path) -> Peer:
    env = peer_env("bentoml")
    log_file = workdir / "bentoml.log"
    process = start_process(
        [str(env / "bin" / "bentoml"), "serve", "service:FraudClassifier", "--host", "127.0.0.1", "--port", str(port)],
        log_file=log_file, cwd=HERE / "bentoml",
        env={"PATH": f"{env / 'bin'}:/usr/bin:/bin", "MLFLEET_PEER_MODEL": str(onnx_path.resolve()),
             "BENTOML_HOME": str(workdir / "bentoml-home"), "HOME": str(workdir)},
    )
    wait_serving(process, f"http://127.0.0.1:{port}/readyz", timeout_s=180, what="bentoml", log_file=log_file)
    body = json.dumps({"input": [vector]})
    return Peer("bentoml", f"http://127.0.0.1:{port}/predict", body.encode(), process)
