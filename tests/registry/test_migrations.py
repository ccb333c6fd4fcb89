"""Alembic migrations on SQLite and PostgreSQL: the head revision is exactly the models' schema, ``mlfleet db
upgrade`` applies it (twice is harmless), the registry starts on the migrated database, and audit events
cannot be updated or deleted."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pydantic import SecretStr
from sqlalchemy import create_engine, delete, insert, inspect, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from mlfleet.cli import app as cli_app
from services.registry import migrations
from services.registry.models import AuditEvent, Base, Lease, RevisionCounter
from services.registry.settings import RegistrySettings
from tests.registry.harness import running_registry

NO_DATABASE_ENV = {"MLFLEET_DATABASE_URL": "", "MLFLEET_REGISTRY_DATABASE_URL": ""}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request, tmp_path: Path) -> Iterator[str]:
    """A database with no table at all (the session's shared PostgreSQL database is migrated by other tests)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    yield from empty_postgres_database(request)


@pytest.fixture
def empty_postgres_url(request) -> Iterator[str]:
    yield from empty_postgres_database(request)


def empty_postgres_database(request) -> Iterator[str]:
    admin_url = request.getfixturevalue("postgres_admin_url")
    name = f"mlfleet_migrations_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield make_url(request.getfixturevalue("postgres_url")).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def differences(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_head_on_an_empty_database_builds_exactly_the_models_schema(empty_database_url):
    database_url = empty_database_url
    engine = create_engine(database_url)
    try:
        assert migrations.current_revision(engine) is None
        migrations.upgrade(engine)
        assert migrations.current_revision(engine) == migrations.head_revision()
        assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
    finally:
        engine.dispose()
    assert differences(database_url) == []


def test_mlfleet_db_upgrade_migrates_and_is_idempotent(empty_database_url):
    database_url = empty_database_url
    runner = CliRunner()
    env = NO_DATABASE_ENV
    before = runner.invoke(cli_app, ["db", "current", "--database-url", database_url], env=env)
    assert before.exit_code == 0, before.output
    assert before.output.strip() == f"none (head is {migrations.head_revision()}: run `mlfleet db upgrade`)"
    for _ in range(2):
        result = runner.invoke(cli_app, ["db", "upgrade", "--database-url", database_url], env=env)
        assert result.exit_code == 0, result.output
        assert result.output.strip().endswith(f"is at revision {migrations.head_revision()} (head)")
    after = runner.invoke(cli_app, ["db", "current"], env={**env, "MLFLEET_DATABASE_URL": database_url})
    assert after.exit_code == 0, after.output
    assert after.output.strip() == f"{migrations.head_revision()} (head)"
    assert differences(database_url) == []
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(select(RevisionCounter.name)).scalars().all() == ["policy_revision"]
            assert connection.execute(select(Lease.name)).scalars().all() == ["rollout-controller"]
    finally:
        engine.dispose()


def test_mlfleet_db_upgrade_defaults_to_sqlite_under_the_home(tmp_path):
    home = tmp_path / "home"
    absent = CliRunner().invoke(cli_app, ["db", "current"], env={**NO_DATABASE_ENV, "MLFLEET_HOME": str(home)})
    assert absent.exit_code == 3 and "no registry database at" in absent.output, absent.output
    assert not (home / "registry.db").exists(), "asking creates no database"
    result = CliRunner().invoke(cli_app, ["db", "upgrade"], env={**NO_DATABASE_ENV, "MLFLEET_HOME": str(home)})
    assert result.exit_code == 0, result.output
    assert str(home / "registry.db") in result.output
    assert differences(f"sqlite:///{home / 'registry.db'}") == []


async def test_the_registry_starts_on_a_migrated_database(empty_database_url, tmp_path, triton, redis_url, admin_key):
    result = CliRunner().invoke(cli_app, ["db", "upgrade", "--database-url", empty_database_url], env=NO_DATABASE_ENV)
    assert result.exit_code == 0, result.output
    settings = RegistrySettings(home=tmp_path, database_url=empty_database_url, triton_grpc_url=triton.grpc_url,
                                redis_url=redis_url, bootstrap_admin_key=SecretStr(admin_key))
    async with running_registry(settings) as client:
        ready = await client.get("/readyz")
        models = await client.get("/v1/models")
    assert ready.status_code == 200, ready.text
    assert models.json()["count"] == 0


def test_audit_events_are_append_only_from_revision_0003(empty_database_url):
    engine = create_engine(empty_database_url)
    try:
        migrations.upgrade(engine)
        with engine.begin() as connection:
            connection.execute(insert(AuditEvent).values(actor="tester", action="model.create", model="m", detail={}))
        for statement in (update(AuditEvent).values(actor="someone else"), delete(AuditEvent)):
            with pytest.raises(IntegrityError, match="append-only"), engine.begin() as connection:
                connection.execute(statement)
        with engine.begin() as connection:
            command.downgrade(migrations.alembic_config(connection), "0002")
        with engine.begin() as connection:
            assert connection.execute(delete(AuditEvent)).rowcount == 1
    finally:
        engine.dispose()


def test_two_active_rollouts_of_one_model_left_by_an_older_release_keep_the_newest(empty_database_url):
    """Before 0002's one-active-rollout index two replicas could each start one: the index could not be built on such
    a database, and no replica could start."""
    engine = create_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrations.alembic_config(connection), "0001")
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO models (id, name, description, gates, last_version, created_at) "
                                    "VALUES (1, 'm', '', '{}', 2, CURRENT_TIMESTAMP)"))
            for rollout_id in (1, 2, 3):
                connection.execute(text(
                    "INSERT INTO rollouts (id, model_id, candidate, baseline, state, step_index, canary_percent, steps, "
                    "interval_s, min_requests, checks, max_failures, failures, require_approval, approved, "
                    "step_started_at, reason, created_by, created_at, updated_at) VALUES (:id, 1, 2, 1, :state, 0, 10, "
                    "'[10]', 60, 10, '{}', 1, 0, false, false, CURRENT_TIMESTAMP, '', 'a', CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP)"), {"id": rollout_id, "state": "paused" if rollout_id == 1 else "running"})
        migrations.upgrade(engine)
        assert migrations.current_revision(engine) == migrations.head_revision()
        with engine.connect() as connection:
            states = dict(connection.execute(text("SELECT id, state FROM rollouts ORDER BY id")).all())
            reason = connection.execute(text("SELECT reason FROM rollouts WHERE id = 1")).scalar_one()
        assert states == {1: "aborted", 2: "aborted", 3: "running"} and "migration 0002" in reason
    finally:
        engine.dispose()


def test_replicas_migrating_a_pre_migrations_database_together_both_start(empty_postgres_url):
    """Both complete the legacy schema and stamp it unless the first holds the migration lock throughout: the second
    failed on a column or trigger the first had just added."""
    engine = create_engine(empty_postgres_url)
    try:
        Base.metadata.create_all(engine)  # as a release from before migrations left it, lacking 0004's column
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE rollouts DROP COLUMN progress_deadline_s"))
        replicas = [create_engine(empty_postgres_url) for _ in range(2)]
        with ThreadPoolExecutor(2) as pool:
            for outcome in [pool.submit(migrations.upgrade, replica) for replica in replicas]:
                outcome.result()
        for replica in replicas:
            replica.dispose()
        assert migrations.current_revision(engine) == migrations.head_revision()
    finally:
        engine.dispose()
    assert differences(empty_postgres_url) == []
