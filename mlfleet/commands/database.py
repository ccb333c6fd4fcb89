"""``mlfleet db upgrade|current``: the registry database's Alembic migrations, run against the database itself.

These commands open the database directly (no running registry needed), so they work before the
first start and from a deploy job. The registry also upgrades its database when it starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from services.registry.database import Database

db_app = typer.Typer(help="The registry database's schema migrations (Alembic).", no_args_is_help=True)

DatabaseUrlOption = Annotated[str | None, typer.Option(
    "--database-url", envvar=["MLFLEET_DATABASE_URL", "MLFLEET_REGISTRY_DATABASE_URL"], show_default=False,
    help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default MLFLEET_DATABASE_URL, "
         "MLFLEET_REGISTRY_DATABASE_URL, or SQLite at <home>/registry.db).")]
HomeOption = Annotated[Path, typer.Option(envvar="MLFLEET_HOME", help="State folder holding the default SQLite database.")]


def _open(database_url: str | None, home: Path) -> Database:
    from services.registry.database import Database
    from services.registry.settings import sqlite_url

    return Database(database_url or sqlite_url(home))


def _where(database: Database) -> str:
    return database.engine.url.render_as_string(hide_password=True)


@db_app.command("upgrade")
def upgrade(database_url: DatabaseUrlOption = None, home: HomeOption = Path(".mlfleet")) -> None:
    """Migrate the database to the newest revision (idempotent; safe while other replicas start)."""
    from services.registry import migrations

    database = _open(database_url, home)
    try:
        database.migrate()
        typer.echo(f"{_where(database)} is at revision {migrations.current_revision(database.engine)} (head)")
    finally:
        database.dispose()


@db_app.command("current")
def current(database_url: DatabaseUrlOption = None, home: HomeOption = Path(".mlfleet")) -> None:
    """Print the database's revision and whether it is the newest one."""
    from services.registry import migrations

    if database_url is None and not (home / "registry.db").exists():
        typer.echo(f"no registry database at {(home / 'registry.db').resolve()} (the default SQLite one): give "
                   "--database-url or --home (MLFLEET_HOME), or run `mlfleet db upgrade` to create it", err=True)
        raise typer.Exit(code=3)
    database = _open(database_url, home)
    try:
        revision = migrations.current_revision(database.engine)
    finally:
        database.dispose()
    head = migrations.head_revision()
    if revision == head:
        typer.echo(f"{revision} (head)")
    else:
        typer.echo(f"{revision or 'none'} (head is {head}: run `mlfleet db upgrade`)")
