"""``mlfleet up`` starts every part as its own process and stops them all on SIGTERM."""

from __future__ import annotations

import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from mlfleet.runtime.processes import http_ok, port_open

SERVICES = ("gateway", "registry", "features", "monitor")


def _wait_for_line(process: subprocess.Popen, marker: str, timeout_s: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        lines.append(line.rstrip())
        if marker in line:
            return lines
    pytest.fail(f"{marker!r} never printed; output so far:\n" + "\n".join(lines))


def test_up_starts_everything_and_stops_cleanly(fleet_env, mlfleet_command):
    process = subprocess.Popen(mlfleet_command + ["up"], env=fleet_env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        output = _wait_for_line(process, "Serving.", timeout_s=180)
        children = psutil.Process(process.pid).children(recursive=True)
        ports = {name: int(fleet_env[f"MLFLEET_{name.upper()}_PORT"]) for name in SERVICES}
        for name, port in ports.items():
            assert http_ok(f"http://127.0.0.1:{port}/readyz"), f"{name} not ready"
            assert any(f"http://127.0.0.1:{port}/docs" in line for line in output), f"{name} docs URL not printed"
        assert any("embedded" in line for line in output), "the embedded Redis was not reported"
        key_file = Path(fleet_env["MLFLEET_HOME"]) / "secrets" / "admin.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert any(str(key_file.resolve()) in line for line in output), "the admin key file was not reported"
        assert not any(key in line for line in output), "the admin key itself must never be printed"
        registry = f"http://127.0.0.1:{ports['registry']}"
        assert httpx.get(f"{registry}/v1/auth/whoami", headers={"Authorization": f"Bearer {key}"}).json() == {
            "name": "bootstrap-admin", "role": "admin"}
        assert httpx.get(f"{registry}/v1/models").status_code == 401
        # Triton, redis-server and four uvicorn processes at least.
        assert len(children) >= 6
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"processes left behind: {[p.pid for p in alive]}"
    all_ports = [int(v) for k, v in fleet_env.items() if k.startswith("MLFLEET_") and k.endswith("_PORT")]
    all_ports.append(int(fleet_env["MLFLEET_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]))
    assert not [p for p in all_ports if port_open("127.0.0.1", p)], "a port is still in use after stop"


def test_a_second_fleet_on_busy_ports_says_so_in_one_line_and_starts_nothing(fleet_env, mlfleet_command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(fleet_env["MLFLEET_GATEWAY_PORT"])))
        taken.listen()
        result = subprocess.run(mlfleet_command + ["up"], env=fleet_env, capture_output=True, text=True,
                                timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ports already in use: gateway") and "another fleet" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr and "Fleet stopped." not in result.stdout
    assert not (Path(fleet_env["MLFLEET_HOME"]) / "secrets").exists(), "nothing was written or started"
