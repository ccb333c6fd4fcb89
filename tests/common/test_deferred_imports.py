"""scipy.stats is imported beside a service's start, not before it: each case runs in a fresh interpreter, since
this one imported scipy long ago."""

from __future__ import annotations

import pytest

from tests.common.test_feast_import import python

AFTER_START = """
import sys
from fastapi.testclient import TestClient
from services.{service}.app import create_app
from services.{service}.settings import {settings}
imported_first = "scipy.stats" in sys.modules
with TestClient(create_app({settings}(home="{home}", {extra}))) as client:
    ready = client.get("/healthz").status_code
    import threading
    for thread in threading.enumerate():
        if thread.name == "deferred-imports":
            thread.join(120)
    print(imported_first, ready, "scipy.stats" in sys.modules)
"""


@pytest.mark.parametrize(("service", "settings", "extra"), [
    ("monitor", "MonitorSettings", "redis_url='{redis_url}'"),
    ("registry", "RegistrySettings", "redis_url='{redis_url}', triton_grpc_url='127.0.0.1:1', "
                                     "triton_http_url='127.0.0.1:1'"),
])
def test_a_service_starts_without_scipy_stats_and_imports_it_in_the_background(service, settings, extra, redis_url,
                                                                                tmp_path):
    script = AFTER_START.format(service=service, settings=settings, home=tmp_path,
                                extra=extra.format(redis_url=redis_url))
    assert python(script) == "False 200 True"


def test_the_heap_is_frozen_again_once_the_modules_are_imported():
    script = """
import gc, sys
from services.common.deferred_imports import import_in_background
before = gc.get_freeze_count()
import_in_background("colorsys", freeze=True).join(60)
print("colorsys" in sys.modules, gc.get_freeze_count() > before)
"""
    assert python(script) == "True True"


def test_a_module_that_cannot_be_imported_is_logged_and_the_next_is_still_imported():
    script = """
import io, logging, sys
log = io.StringIO()
logging.basicConfig(stream=log, format="%(message)s")
from services.common.deferred_imports import import_in_background
import_in_background("no_such_module_here", "colorsys").join(60)
print("could not import no_such_module_here" in log.getvalue(), "colorsys" in sys.modules)
"""
    assert python(script) == "True True"
