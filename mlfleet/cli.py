"""The ``mlfleet`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="mlfleet: serve models on Triton with canaries, Feast features and drift monitoring.", no_args_is_help=True)


def main() -> None:
    app()
