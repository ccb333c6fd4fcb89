"""A database created by an earlier release gets the nullable columns it lacks."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, text

from services.registry.database import Database


def test_an_older_versions_table_gains_the_fault_injection_column(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(
            "CREATE TABLE model_versions (id INTEGER PRIMARY KEY, model_id INTEGER, version INTEGER, sha256 VARCHAR(64),"
            " size_bytes BIGINT, status VARCHAR(32), signature JSON, metrics JSON, lineage JSON,"
            " reference_profile JSON, description TEXT, created_at DATETIME)"))
    engine.dispose()
    database = Database(url)
    database.create_schema()
    database.create_schema()
    columns = {c["name"] for c in inspect(database.engine).get_columns("model_versions")}
    database.dispose()
    assert "fault_injection" in columns
