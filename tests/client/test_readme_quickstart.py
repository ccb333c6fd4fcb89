"""The README's quick start, run as written (its ``python`` and ``bash`` blocks, in order) against the fleet."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)


def test_readme_has_a_quick_start_with_client_and_cli():
    kinds = [kind for kind, _ in quickstart_blocks()]
    assert "python" in kinds and "bash" in kinds


def test_quick_start_runs_as_written(client_fleet, tmp_path):
    outputs = []
    for kind, code in quickstart_blocks():
        argv = [sys.executable, "-c", code] if kind == "python" else ["bash", "-euo", "pipefail", "-c", code]
        result = subprocess.run(argv, cwd=tmp_path, env=client_fleet.env(), check=False, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, f"{kind} block failed:\n{code}\n{result.stdout}\n{result.stderr}"
        outputs.append(result.stdout)
    assert re.search(r"registered version \d+: auc 0\.9\d\d", outputs[0]), outputs[0]
    assert "quickstart" in outputs[1]
    assert outputs[1].rstrip().splitlines()[-1].strip().isdigit()
    key_file = tmp_path / "deployer.key"
    assert key_file.read_text().startswith("mlf_") and key_file.stat().st_mode & 0o077 == 0
    assert key_file.read_text().strip() not in outputs[2]
    assert re.search(r"role\s+admin", outputs[2]), outputs[2]
    assert re.search(r"name\s+ci-deployer\s+role\s+deployer", outputs[2]), outputs[2]
