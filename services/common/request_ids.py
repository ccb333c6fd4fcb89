"""Request ids that say when they were made: RFC 9562's UUIDv7 layout, written as 32 hex digits.

The gateway names each prediction with the caller's ``X-Request-Id`` or, without one, with an id of
this form: 48 bits of Unix time in milliseconds, the version (7), 74 random bits and the variant.
The monitor reads the time back (:func:`made_at`) to tell feedback that came after its prediction
was forgotten (``late``) from feedback about a request it never saw (``unknown``) without keeping a
marker per prediction: at the case study's 47 M predictions a day, a week of such markers was about
50 GB of Redis (~150 bytes each by ``used_memory``). An id's time is trusted only when it is the
prediction's own (:func:`dated_by`): a caller's UUIDv7 made then counts too, while one made long
before, or a random id that merely has a UUIDv7's shape (one in 64 of them), gets the marker.
"""

from __future__ import annotations

import random
import re
import time

_RANDOM_A_BITS, _RANDOM_B_BITS = 12, 62
_VERSION, _VARIANT = 0x7, 0b10
_UUID7 = re.compile(r"[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}", re.IGNORECASE)
_UUID7_DASHED = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", re.IGNORECASE)
MAX_REQUEST_ID_LENGTH = 128
"""The longest request id a caller may give (``X-Request-Id``): feedback names predictions by it."""
DATED_WITHIN_S = 60.0
"""How far an id's time may be from its prediction's for the id to date it (clocks of callers and gateways)."""


def new_request_id(now: float | None = None) -> str:
    """A UUIDv7 of ``now`` (Unix seconds; the current time by default) as 32 lower-case hex digits. Not a secret, so
    the ``random`` module's generator, not ``os.urandom``'s system call."""
    millis = time.time_ns() // 1_000_000 if now is None else int(now * 1000)
    random_a = random.getrandbits(_RANDOM_A_BITS)
    random_b = random.getrandbits(_RANDOM_B_BITS)
    value = (millis << 80) | (_VERSION << 76) | (random_a << 64) | (_VARIANT << 62) | random_b
    return f"{value:032x}"


def made_at(request_id: str) -> float | None:
    """When a UUIDv7 request id (32 hex digits, or the 36-character dashed form) was made, in Unix seconds; ``None``
    for any other id."""
    if not (_UUID7.fullmatch(request_id) or _UUID7_DASHED.fullmatch(request_id)):
        return None
    return int(request_id.replace("-", "")[:12], 16) / 1000


def dated_by(request_id: str, at: float) -> bool:
    """Whether ``request_id`` says when its prediction, made at ``at`` (Unix seconds), was made: a UUIDv7 whose time
    is within :data:`DATED_WITHIN_S` of ``at``."""
    made = made_at(request_id)
    return made is not None and abs(made - at) <= DATED_WITHIN_S
