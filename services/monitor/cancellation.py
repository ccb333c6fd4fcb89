"""Stop a background loop that was cancelled, even when a client library swallowed the cancellation.

Seen at shutdown: a loop task marked "cancelling" went on sleeping and polling, so the
lifespan waited until the process was killed. The loops call :func:`stop_if_cancelled` once
per turn.
"""

from __future__ import annotations

import asyncio


def stop_if_cancelled() -> None:
    """Raise :class:`asyncio.CancelledError` when the current task has a pending cancellation."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
