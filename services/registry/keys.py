"""API keys: create (shown once), list, revoke, and resolve a bearer key to who holds it.

Only the sha256 of a key is stored. The bootstrap admin key comes from the settings (an
environment variable or a secret file) and is registered, hashed, as ``bootstrap-admin``
on first start; revoking it sticks, even across restarts.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.auth import Identity, Role, generate_key, hash_key, key_matches
from services.common.errors import Conflict, NotFound, Unauthorized
from services.registry import repository
from services.registry.database import Database
from services.registry.models import ApiKey, utcnow
from services.registry.schemas import KeyCreate, KeyCreated, KeyList, KeyPublic

BOOTSTRAP_NAME = "bootstrap-admin"
SHOWN_PREFIX = 8
logger = logging.getLogger("mlfleet.registry.keys")


def key_public(row: ApiKey) -> KeyPublic:
    return KeyPublic(id=row.id, name=row.name, role=Role(row.role), prefix=row.prefix, created_by=row.created_by,
                     created_at=row.created_at, revoked_at=row.revoked_at,
                     rate_limit_per_minute=row.rate_limit_per_minute)


class KeyStore:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def authenticate(self, key: str) -> Identity:
        """Who holds ``key``; :class:`Unauthorized` for an unknown or revoked key."""
        def work(session: Session) -> Identity | None:
            row = repository.get_key_by_hash(session, key_hash=hash_key(key))
            if row is None or row.revoked_at is not None or not key_matches(key, row.key_hash):
                return None
            return Identity(name=row.name, role=Role(row.role), rate_limit_per_minute=row.rate_limit_per_minute)

        identity = await self._database.transaction(work)
        if identity is None:
            raise Unauthorized("the API key is unknown or revoked")
        return identity

    async def create(self, body: KeyCreate, *, actor: str) -> KeyCreated:
        key = generate_key()

        def work(session: Session) -> KeyCreated:
            row = repository.add_key(session, name=body.name, role=body.role.value, key_hash=hash_key(key),
                                     prefix=key[:SHOWN_PREFIX], created_by=actor)
            row.rate_limit_per_minute = body.rate_limit_per_minute
            session.flush()
            repository.add_audit(session, actor=actor, action="key.create", model=None,
                                 detail={"key_id": row.id, "name": row.name, "role": row.role,
                                         "rate_limit_per_minute": row.rate_limit_per_minute})
            return KeyCreated(id=row.id, name=row.name, role=Role(row.role), key=key, created_at=row.created_at,
                              rate_limit_per_minute=row.rate_limit_per_minute)

        return await self._database.transaction(work)

    async def list(self) -> KeyList:
        def work(session: Session) -> list[KeyPublic]:
            return [key_public(row) for row in repository.list_keys(session)]

        keys = await self._database.transaction(work)
        return KeyList(data=keys, count=len(keys))

    async def revoke(self, key_id: int, *, actor: str) -> KeyPublic:
        """Revoke a key; revoking it again changes nothing. The last unrevoked admin key is refused (409): nobody
        could create keys any more, and the bootstrap key, once revoked, stays revoked across restarts."""
        def work(session: Session) -> KeyPublic:
            admins = repository.lock_active_keys(session, role=Role.admin.value)
            row = repository.get_key(session, key_id=key_id)
            if row is None:
                raise NotFound(f"there is no API key {key_id}")
            if row.revoked_at is None and [admin.id for admin in admins] == [row.id]:
                raise Conflict(f"key {key_id} ({row.name}) is the last admin key: create another admin key first, "
                               "or no one could manage keys again")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                repository.add_audit(session, actor=actor, action="key.revoke", model=None,
                                     detail={"key_id": row.id, "name": row.name, "role": row.role})
            session.flush()
            return key_public(row)

        return await self._database.transaction(work)

    async def bootstrap(self, key: str) -> None:
        """Register the bootstrap admin key unless a key with its hash exists (revoked or not)."""
        def work(session: Session) -> bool:
            if repository.get_key_by_hash(session, key_hash=hash_key(key)) is not None:
                return False
            repository.add_key(session, name=BOOTSTRAP_NAME, role=Role.admin.value, key_hash=hash_key(key),
                               prefix=key[:SHOWN_PREFIX], created_by="registry")
            repository.add_audit(session, actor="registry", action="key.bootstrap", model=None,
                                 detail={"name": BOOTSTRAP_NAME, "role": Role.admin.value})
            return True

        try:
            added = await self._database.transaction(work)
        except IntegrityError:
            added = False  # another registry process registered it at the same moment
        if added:
            logger.info("bootstrap admin key registered as %r", BOOTSTRAP_NAME)
