"""API keys and roles, shared by the registry (which owns keys) and the services that check them through it
(:mod:`services.common.remote_auth`: the gateway's version pinning, the monitor's feedback).

A key is a high-entropy random token shown once at creation; only its sha256 is stored.
Roles are ordered and each includes the ones before it: ``viewer`` < ``scientist`` <
``deployer`` < ``admin``. Callers send ``Authorization: Bearer <key>``.

Nothing here logs or stores a key in the clear.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum

from pydantic import BaseModel, Field

from services.common.errors import Forbidden, RateLimited, Unauthorized
from services.common.rate_limit import KeyRateLimiter

KEY_PREFIX = "mlf_"
KEY_BYTES = 32
"""Random bytes per key (256 bits): far beyond guessing, so a plain sha256 is a safe way to store it."""
MAX_KEY_LENGTH = 256


class Role(StrEnum):
    """What a key may do; each role includes every role before it."""

    viewer = "viewer"
    scientist = "scientist"
    deployer = "deployer"
    admin = "admin"

    @property
    def rank(self) -> int:
        return ROLE_ORDER.index(self)

    def includes(self, required: Role) -> bool:
        """Whether a key of this role may do what ``required`` may."""
        return self.rank >= required.rank


ROLE_ORDER: tuple[Role, ...] = (Role.viewer, Role.scientist, Role.deployer, Role.admin)


class Identity(BaseModel):
    """Who a key belongs to, as ``GET /v1/auth/whoami`` answers."""

    name: str = Field(description="The key's name; writes are audited under it.")
    role: Role
    rate_limit_per_minute: int | None = Field(
        default=None, ge=1, description="Requests per minute the key may make to each service replica; "
                                        "absent: unlimited.")


def generate_key() -> str:
    """A new random API key, e.g. ``mlf_3q2…``."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def hash_key(key: str) -> str:
    """The stored form of ``key``: its sha256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_matches(key: str, stored_hash: str) -> bool:
    """Whether ``key`` hashes to ``stored_hash``, compared in constant time."""
    return hmac.compare_digest(hash_key(key), stored_hash)


def bearer_key(authorization: str | None) -> str:
    """The key of an ``Authorization: Bearer <key>`` header; :class:`Unauthorized` when missing or malformed."""
    if not authorization or not authorization.strip():
        raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or " " in key or len(key) > MAX_KEY_LENGTH:
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    return key


def require_role(identity: Identity, required: Role) -> Identity:
    """``identity`` when its role includes ``required``, else :class:`Forbidden` (403)."""
    if not identity.role.includes(required):
        raise Forbidden(f"this needs the {required.value} role; the key {identity.name!r} is {identity.role.value}",
                        required_role=required.value, role=identity.role.value)
    return identity


def enforce_rate_limit(limiter: KeyRateLimiter, key: str, identity: Identity) -> None:
    """Count one request of ``key`` (by its hash) against its identity's limit; :class:`RateLimited` (429) over it."""
    retry_after_s = limiter.retry_after(hash_key(key), identity.rate_limit_per_minute)
    if retry_after_s:
        raise RateLimited(f"the key {identity.name!r} may make {identity.rate_limit_per_minute} requests a minute; "
                          f"retry in {retry_after_s} s", retry_after_s=retry_after_s)
