"""The real tools the deployment tests run, installed when the machine lacks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

APT_TIMEOUT_S = 600
APT_WAITS_FOR_LOCK = ["-o", f"DPkg::Lock::Timeout={APT_TIMEOUT_S}"]
"""The suite's two workers may both install a tool (promtool here, Chromium for the dashboard test): the second
apt-get waits for the first's lock instead of failing."""


def promtool() -> str:
    """Path of ``promtool``; installs Debian's ``prometheus`` package (which ships it) when missing."""
    found = shutil.which("promtool")
    if found:
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", *APT_WAITS_FOR_LOCK, "update", "-qq"], check=True, env=env, timeout=APT_TIMEOUT_S)
    subprocess.run(["apt-get", *APT_WAITS_FOR_LOCK, "install", "-y", "-qq", "--no-install-recommends", "prometheus"], check=True, env=env,
                   timeout=APT_TIMEOUT_S)
    found = shutil.which("promtool")
    assert found, "apt-get installed prometheus but promtool is not on PATH"
    return found


def venv_tool(name: str) -> str:
    """A console script installed beside this interpreter (the test extra's tools)."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is missing: install the test extra (`uv pip install -e '.[test]'`)"
    return str(path)
