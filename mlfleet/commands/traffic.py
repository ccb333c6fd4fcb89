"""``mlfleet traffic show|set`` and ``mlfleet rollback``."""

from __future__ import annotations

from typing import Annotated

import typer

from mlfleet.commands import render
from mlfleet.commands.context import Output, OutputOption, connect, emit, fleet_command

traffic_app = typer.Typer(help="A model's traffic split: stable, canary, shadow.", no_args_is_help=True)

ModelArg = Annotated[str, typer.Argument(help="Model name.")]


@traffic_app.command("show")
@fleet_command
def show(ctx: typer.Context, model: ModelArg, output: OutputOption = Output.table) -> None:
    """The current split."""
    answer = connect(ctx).get_traffic(model)
    emit(output, answer, lambda out: render.traffic(answer, out))


@traffic_app.command("set")
@fleet_command
def set_(
    ctx: typer.Context,
    model: ModelArg,
    stable: Annotated[int, typer.Option(min=1, help="Version taking the traffic the canary does not.")],
    canary: Annotated[int | None, typer.Option(min=1, help="Canary version.")] = None,
    canary_percent: Annotated[float, typer.Option("--canary-percent", "-p", min=0, max=100,
                                                  help="Share of traffic on the canary.")] = 0.0,
    shadow: Annotated[int | None, typer.Option(min=1, help="Version mirrored every request (answers discarded).")] = None,
    wait: Annotated[bool, typer.Option(help="Return once the gateway serves the new split.")] = True,
    allow_failed: Annotated[bool, typer.Option(help="Serve a version a rollout failed anyway.")] = False,
    output: OutputOption = Output.table,
) -> None:
    """Set the split; returns once Triton serves every version it names (and the gateway routes by it)."""
    answer = connect(ctx).set_traffic(model, stable=stable, canary=canary, canary_percent=canary_percent,
                                      shadow=shadow, wait=wait, allow_failed=allow_failed)
    emit(output, answer, lambda out: render.traffic(answer, out))


@fleet_command
def rollback(
    ctx: typer.Context,
    model: ModelArg,
    reason: Annotated[str | None, typer.Option(help="Why, for the audit log.")] = None,
    output: OutputOption = Output.table,
) -> None:
    """Send all traffic back to the previous stable version now."""
    answer = connect(ctx).rollback(model, reason=reason)
    emit(output, answer, lambda out: render.traffic(answer, out))
