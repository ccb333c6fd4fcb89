"""Keep the garbage collector off what a service loads at start.

A service's imports and lifespan leave 100,000-200,000 long-lived objects (FastAPI, pydantic, Feast, pandas,
pyarrow, scipy, protobuf). Python's full collection scans them all: 40-200 ms here, run whenever enough objects
have survived into the oldest generation. Objects that live across an ``await`` (a batch in flight, a Redis
transaction) survive the young generations, so under load that happens every second or so: on the monitor it cost
~5 µs of CPU per event (a fifth of its work) and on the gateway 100-200 ms stalls of the event loop. Frozen,
the start-up heap is never scanned again; what the service allocates later is collected as before.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move every object alive now into the permanent generation; call when start-up is done, and again after
    modules imported later (:mod:`services.common.deferred_imports`). Nothing unfreezes them: a cycle among frozen
    objects is never collected, so each call also keeps what happens to be alive then (a request in flight)."""
    gc.collect()
    gc.freeze()
