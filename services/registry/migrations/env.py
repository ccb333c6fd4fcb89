"""Alembic environment of the registry: migrates the connection :func:`alembic_config` hands in.

On PostgreSQL a transaction-scoped advisory lock serialises replicas that start at the same time;
the second sees the first one's revision and has nothing left to do.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from services.registry.migrations import MIGRATION_LOCK_ID
from services.registry.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the registry's migrations with `mlfleet db upgrade` (they need a connection)")

context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    context.run_migrations()
