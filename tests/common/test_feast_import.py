"""Importing the fleet's services first turns off typeguard's instrumentation of Feast (see ``services/__init__.py``);
each case runs in a fresh interpreter, since this one imported Feast long ago."""

from __future__ import annotations

import os
import subprocess
import sys

from mlfleet.runtime.processes import INHERITED_BY_ACCIDENT
from tests.conftest import ROOT

INSTRUMENTED = """
import sys
{first}
from feast.feature_view import FeatureView
from feast.on_demand_feature_view import OnDemandFeatureView
names = FeatureView.__init__.__code__.co_names + OnDemandFeatureView.__init__.__code__.co_names
print("check_argument_types_internal" in names)
"""


def python(script: str) -> str:
    """The last line ``script`` prints in a fresh interpreter, whose environment is not the one this process's own
    import of Feast changed."""
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_BY_ACCIDENT}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout.strip().splitlines()[-1]


def feast_is_instrumented(first: str) -> bool:
    return python(INSTRUMENTED.format(first=first)) == "True"


def test_feast_imported_on_its_own_is_instrumented_by_typeguard():
    assert feast_is_instrumented(first="")


def test_feast_imported_after_the_services_package_is_not():
    assert not feast_is_instrumented(first="import services")


def test_the_services_package_keeps_feast_from_switching_metrics_to_multiprocess_mode():
    assert python("import services, feast, prometheus_client.values as v; print(v.ValueClass.__name__)") == "MutexValue"
