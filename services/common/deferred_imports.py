"""Modules a service needs once it works, not to start: imported beside its start-up instead of before it.

scipy.stats is about half of the registry's and the monitor's imports (~1.5 s of a start here) for functions
they call only when they judge a rollout step or a drift window. Their modules import it where it is used, and
the service's lifespan starts :func:`import_in_background` once it is open: the service answers (and reports
ready) without waiting for it, and its first use finds it imported instead of stalling the event loop for it.
"""

from __future__ import annotations

import importlib
import logging
import threading

from services.common.heap import freeze_startup_heap

logger = logging.getLogger("mlfleet.deferred_imports")


def import_in_background(*modules: str, freeze: bool = False) -> threading.Thread:
    """Import ``modules`` in a daemon thread and return it. ``freeze``: then move the heap into the garbage
    collector's permanent generation again (:func:`~services.common.heap.freeze_startup_heap`), so a service that
    froze its start-up heap does not scan the modules' objects in every full collection."""
    thread = threading.Thread(target=_import, args=(modules, freeze), name="deferred-imports", daemon=True)
    thread.start()
    return thread


def _import(modules: tuple[str, ...], freeze: bool) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception:  # a broken install shows at first use too; it must not stop the service here
            logger.exception("could not import %s ahead of its first use", module)
    if freeze:
        freeze_startup_heap()
