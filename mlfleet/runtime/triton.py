"""Launch the real Triton server shipped in the ``nvidia-pytriton`` wheel, on CPU.

The runtime lives in its own virtual environment (numpy < 2, see DESIGN.md). This module
only locates that environment and builds the command line and environment that make the
Python-backend stub load the right libpython; it never imports Triton itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlfleet.runtime.processes import start_process

REQUIREMENTS = Path(__file__).resolve().parents[2] / "deploy" / "triton" / "requirements.txt"


def default_runtime_env() -> Path:
    """``MLFLEET_TRITON_ENV``, else ``.venv-triton`` beside the active ``.venv``."""
    configured = os.environ.get("MLFLEET_TRITON_ENV")
    if configured:
        return Path(configured)
    return Path(sys.prefix).resolve().parent / ".venv-triton"


def otlp_traces_url(env: Mapping[str, str] = os.environ) -> str | None:
    """Where Triton sends its OpenTelemetry traces: ``MLFLEET_TRITON_OTLP_URL``, else the fleet's
    OTLP/HTTP collector from the standard ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` (Triton exports
    over HTTP only, so a gRPC-only configuration leaves Triton untraced)."""
    if env.get("MLFLEET_TRITON_OTLP_URL"):
        return env["MLFLEET_TRITON_OTLP_URL"]
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol == "grpc" or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    return None


class TritonRuntimeMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class TritonRuntime:
    """A Triton runtime environment on disk."""

    env: Path = field(default_factory=default_runtime_env)

    @property
    def python(self) -> Path:
        return self.env / "bin" / "python"

    def _query(self, code: str) -> str:
        if not self.python.exists():
            raise TritonRuntimeMissing(f"no Triton runtime at {self.env}; run `make install` first")
        return subprocess.run([str(self.python), "-c", code], check=True, capture_output=True, text=True).stdout.strip()

    @property
    def site_packages(self) -> Path:
        return Path(self._query("import sysconfig; print(sysconfig.get_paths()['purelib'])"))

    @property
    def python_version(self) -> str:
        return self._query("import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')")

    @property
    def libdir(self) -> Path:
        return Path(self._query("import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"))

    @property
    def server_dir(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.server_dir / "bin" / "tritonserver"

    def prepare_backends(self, backend_dir: Path) -> Path:
        """Lay out ``backend_dir/python`` with the backend library and this interpreter's stub."""
        python_dir = backend_dir / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        shipped = self.server_dir / "backends" / "python"
        for item in shipped.iterdir():
            if not item.is_file():  # e.g. the __pycache__ a bytecode-compiling install leaves
                continue
            target = python_dir / item.name
            if not target.exists() or target.stat().st_size != item.stat().st_size:
                shutil.copy2(item, target)
        stub = self.server_dir / "python_backend_stubs" / self.python_version / "triton_python_backend_stub"
        target = python_dir / "triton_python_backend_stub"
        if not target.exists() or target.stat().st_size != stub.stat().st_size:
            shutil.copy2(stub, target)
        return backend_dir


@dataclass(frozen=True)
class TritonLaunch:
    """How to run one Triton server: ports, folders, optional tracing."""

    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    workdir: Path = Path(".mlfleet/triton")
    otlp_traces_url: str | None = None
    log_verbose: int = 0
    latency_summaries: bool = False
    """Triton's quantile summaries (``--metrics-config summary_latencies=true``). Off unless asked for: on this
    2-core machine they took direct Triton at 16 connections from ~14,000 to ~12,000 requests/s in a first 5 s run
    and to ~8,000 by the fourth run in a row, recovering only after a minute idle (the summaries' window filling),
    while the counters (``nv_inference_*_duration_us``) and the gateway's own histograms stay cheap."""

    def command(self, runtime: TritonRuntime) -> tuple[list[str], dict[str, str]]:
        workdir = Path(self.workdir).resolve()
        backend_dir = runtime.prepare_backends(workdir / "backends")
        repository = workdir / "repository"
        repository.mkdir(parents=True, exist_ok=True)
        argv = [
            str(runtime.binary),
            f"--model-repository={repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--strict-readiness=false",
            "--exit-on-error=false",
            f"--log-verbose={self.log_verbose}",
        ]
        if self.latency_summaries:
            argv.append("--metrics-config=summary_latencies=true")
        if self.otlp_traces_url:
            argv += [
                "--trace-config=mode=opentelemetry",
                f"--trace-config=opentelemetry,url={self.otlp_traces_url}",
                "--trace-config=rate=1",
                "--trace-config=level=TIMESTAMPS",
            ]
        env = dict(os.environ)
        env["PATH"] = f"{runtime.env / 'bin'}:{env.get('PATH', '')}"
        libs = runtime.site_packages / "nvidia_pytriton.libs"
        env["LD_LIBRARY_PATH"] = f"{runtime.libdir}:{libs}"
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
        return argv, env

    def start(self, runtime: TritonRuntime, *, log_file: Path) -> subprocess.Popen:
        argv, env = self.command(runtime)
        return start_process(argv, log_file=log_file, env=env)
