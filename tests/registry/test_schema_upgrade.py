"""A database created by a release from before migrations gets what it lacks and is stamped at the head revision."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, text

from services.registry import migrations
from services.registry.database import Database
from services.registry.models import Base


def test_an_older_versions_table_gains_the_fault_injection_column_and_is_stamped(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "CREATE TABLE model_versions (id INTEGER PRIMARY KEY, model_id INTEGER, version INTEGER, sha256 VARCHAR(64),"
            " size_bytes BIGINT, status VARCHAR(32), signature JSON, metrics JSON, lineage JSON,"
            " reference_profile JSON, description TEXT, created_at DATETIME)"))
    engine.dispose()
    database = Database(url)
    database.migrate()
    database.migrate()
    inspector = inspect(database.engine)
    columns = {c["name"] for c in inspector.get_columns("model_versions")}
    tables = set(inspector.get_table_names())
    revision = migrations.current_revision(database.engine)
    database.dispose()
    assert "fault_injection" in columns
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert revision == migrations.head_revision()
