"""Alembic migrations of the registry's schema, run programmatically (no ``alembic.ini``).

:func:`upgrade` brings a database to the newest revision; a database created by a release from
before migrations (tables but no ``alembic_version``) gets the tables and nullable columns it
lacks and is then stamped, since that release's ``create_all`` built the initial revision's schema.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from services.registry.models import Base

MIGRATIONS_DIR = Path(__file__).parent
INITIAL_REVISION = "0001"
"""The revision a pre-migrations release's ``create_all`` schema corresponds to."""
logger = logging.getLogger("mlfleet.registry.migrations")


def alembic_config(connection: Connection) -> Config:
    """A configuration whose ``env.py`` migrates ``connection`` (in its transaction)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped with this release."""
    script = ScriptDirectory(str(MIGRATIONS_DIR))
    head = script.get_current_head()
    assert head is not None, "the registry ships at least one revision"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision ``engine``'s database is at; ``None`` when it was never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


MIGRATION_LOCK_ID = 0x6D6C666C  # "mlfl"
"""PostgreSQL advisory lock that serialises replicas migrating at the same time."""


def upgrade(engine: Engine) -> None:
    """Migrate ``engine``'s database to the newest revision, in one transaction (idempotent). On PostgreSQL the
    transaction first takes :data:`MIGRATION_LOCK_ID`, so a second replica starting at once waits, then finds the
    newest revision and has nothing to do: that includes completing and stamping a pre-migrations database, which
    two replicas doing together made one of them fail on columns and triggers the other had just added."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        config = alembic_config(connection)
        if _created_before_migrations(connection):
            _complete_legacy_schema(connection)
            command.stamp(config, INITIAL_REVISION)
            logger.info("stamped a database created before migrations at %s", INITIAL_REVISION)
        command.upgrade(config, "head")


def _created_before_migrations(connection: Connection) -> bool:
    tables = set(inspect(connection).get_table_names())
    return "alembic_version" not in tables and bool(tables & set(Base.metadata.tables))


def _complete_legacy_schema(connection: Connection) -> None:
    """Add the tables and nullable columns (e.g. ``fault_injection``) an earlier release's database lacks."""
    Base.metadata.create_all(connection)
    existing = inspect(connection)
    for table in Base.metadata.sorted_tables:
        present = {c["name"] for c in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present and column.nullable:
                kind = column.type.compile(dialect=connection.dialect)
                connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
                logger.info("added column %s.%s", table.name, column.name)
