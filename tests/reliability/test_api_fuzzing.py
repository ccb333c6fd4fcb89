"""schemathesis against every service's OpenAPI: no 5xx and every answer matches its schema.

A bounded number of examples per operation here (``MLFLEET_FUZZ_EXAMPLES``, 20 by default; fixed
seed, so CI is reproducible); ``make chaos`` runs many more. The registry and the monitor also run
the stateful phase (sequences of calls along the links schemathesis infers from their responses:
create a model, then upload, list and route its versions; feedback for a prediction). Each run's
case counts go to ``reliability.json`` (:func:`tests.results.results_file`) under ``schemathesis``,
one entry per examples setting.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.results import update_results

EXAMPLES = int(os.environ.get("MLFLEET_FUZZ_EXAMPLES", "20"))
SEED = 20261125
CHECKS = "not_a_server_error,response_schema_conformance"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
PHASES = {
    "gateway": "examples,fuzzing",
    "registry": "examples,fuzzing,stateful",
    "features": "examples,fuzzing",
    "monitor": "examples,fuzzing,stateful",
}


def record_cases(service: str, figures: dict) -> None:
    """Put one service's figures under ``schemathesis.max_examples_<EXAMPLES>``, keeping the others."""
    def add(results: dict) -> dict:
        runs = results.get("schemathesis", {})
        services = runs.get(f"max_examples_{EXAMPLES}", {}).get("services", {}) | {service: figures}
        runs[f"max_examples_{EXAMPLES}"] = {
            "max_examples": EXAMPLES, "seed": SEED, "checks": CHECKS.split(","), "services": services,
            "cases": sum(s["cases"] for s in services.values()), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        return results | {"schemathesis": runs}
    update_results("reliability.json", add)


@pytest.mark.parametrize("service", list(PHASES))
def test_no_server_errors_and_answers_match_their_schema(demo_fleet, service, record_property):
    key = demo_fleet.config.admin_key_file.read_text().strip()
    url = demo_fleet.config.url(service)
    started = time.monotonic()
    result = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--header", f"Authorization: Bearer {key}",
         "--checks", CHECKS, "--phases", PHASES[service],
         "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "1", "--no-color",
         "--exclude-path-regex", "^/(metrics|dashboard)"],
        check=False, capture_output=True, text=True, timeout=1800,
    )
    output = result.stdout + result.stderr
    cases = re.search(r"(\d+) generated", output)
    tested = re.search(r"Tested: (\d+)", output)
    figures = {"phases": PHASES[service], "cases": int(cases.group(1)) if cases else 0,
               "operations_tested": int(tested.group(1)) if tested else 0, "passed": result.returncode == 0,
               "seconds": round(time.monotonic() - started, 1)}
    record_cases(service, figures)
    record_property("schemathesis_cases", figures["cases"])
    print(f"{service}: {cases.group(0) if cases else 'no cases'}")
    assert result.returncode == 0, output[-6000:]
    assert figures["cases"] > 0
