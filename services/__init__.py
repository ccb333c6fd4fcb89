"""The fleet's services.

Two of Feast's import-time side effects are undone here, before any service module can import it:

- Importing ``feast`` sets ``PROMETHEUS_MULTIPROC_DIR`` and, if ``prometheus_client`` has not been imported yet,
  switches every metric of the process into multiprocess mode (values in shared files, counters of the same name
  merged across app-owned registries). Importing ``prometheus_client`` first keeps each process's metrics in memory,
  as every service expects.
- Feast decorates its classes with typeguard's ``@typechecked``, which re-parses and recompiles the source of each
  of their methods when the module is imported (about 6 s of CPU on a 2-core machine, two thirds of the gateway's
  start) and then checks argument types on every call. typeguard's documented off switch is running Python with
  ``-O``, which every entry point (the image, compose, the chart, ``mlfleet up``, the tests) would have to pass and
  which needs bytecode of its own; making the decorator a no-op before Feast is imported does the same wherever the
  fleet is started from.
"""

import contextlib
from typing import Any

import prometheus_client  # noqa: F401  (import order matters, see above)


def _unchecked(target: Any = None, **_options: Any) -> Any:
    """``typeguard.typechecked`` as a no-op: used bare or with options, it returns what it decorates."""
    return _unchecked if target is None else target


with contextlib.suppress(ImportError):
    import typeguard

    typeguard.typechecked = _unchecked
