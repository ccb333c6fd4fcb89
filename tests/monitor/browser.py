"""Headless Chromium for the dashboard test: Debian's ``chromium`` package driven by Playwright."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
APT_WAITS_FOR_LOCK = ["-o", "DPkg::Lock::Timeout=600"]
"""The suite's two workers may both install a tool (Chromium here, promtool for the deployment tests): the second
apt-get waits for the first's lock instead of failing."""
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def ensure_chromium() -> Path:
    """Debian's Chromium, installed with apt-get on first use (the project's own setup step)."""
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None:
        raise RuntimeError("chromium is missing and apt-get is not available to install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", *APT_WAITS_FOR_LOCK, "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", *APT_WAITS_FOR_LOCK, "update", "-q"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)
    return CHROMIUM
