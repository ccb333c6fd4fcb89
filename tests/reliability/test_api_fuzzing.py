"""schemathesis against every service's OpenAPI: no 5xx and every answer matches its schema.

A bounded number of examples per operation here (fixed seed, so CI is reproducible);
``make chaos`` runs many more.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = int(os.environ.get("MLFLEET_FUZZ_EXAMPLES", "20"))
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.parametrize("service", ["gateway", "registry", "features", "monitor"])
def test_no_server_errors_and_answers_match_their_schema(demo_fleet, service, record_property):
    key = demo_fleet.config.admin_key_file.read_text().strip()
    url = demo_fleet.config.url(service)
    result = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{url}/openapi.json", "--header", f"Authorization: Bearer {key}",
         "--checks", "not_a_server_error,response_schema_conformance", "--phases", "examples,fuzzing",
         "--max-examples", str(EXAMPLES), "--seed", "20261125", "--workers", "1", "--no-color",
         "--exclude-path-regex", "^/(metrics|dashboard)"],
        capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    cases = re.search(r"(\d+) generated", output)
    record_property("schemathesis_cases", int(cases.group(1)) if cases else 0)
    print(f"{service}: {cases.group(0) if cases else 'no cases'}")
    assert result.returncode == 0, output[-6000:]
    assert cases and int(cases.group(1)) > 0
