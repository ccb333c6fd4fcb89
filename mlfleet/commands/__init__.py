"""The fleet commands of the ``mlfleet`` CLI, built on :mod:`mlfleet.client`."""

from __future__ import annotations

import typer

from mlfleet.commands import catalog, database, keys, observe, rollouts, traffic


def install(app: typer.Typer) -> None:
    """Add every fleet command to the root ``mlfleet`` app."""
    app.add_typer(catalog.models_app, name="models")
    app.add_typer(catalog.versions_app, name="versions")
    app.command("register")(catalog.register)
    app.add_typer(traffic.traffic_app, name="traffic")
    app.add_typer(rollouts.rollout_app, name="rollout")
    app.command("rollback")(traffic.rollback)
    app.add_typer(keys.keys_app, name="keys")
    app.command("whoami")(keys.whoami)
    app.add_typer(database.db_app, name="db")
    for command in (observe.predict, observe.metrics, observe.drift, observe.alerts, observe.audit):
        app.command(command.__name__)(command)
