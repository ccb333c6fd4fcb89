"""Handing an outcome to whoever awaits it."""

from __future__ import annotations

import asyncio
from typing import Any


def settle(future: asyncio.Future[Any], outcome: Any) -> None:
    """Give ``future`` its outcome: raised when it is an exception, returned otherwise; nothing when its waiter has
    gone (the future is already done)."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
