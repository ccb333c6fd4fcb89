"""``mlfleet keys create|list|revoke`` (admin) and ``mlfleet whoami``.

A new key's secret is printed once, on standard output, and nowhere else: not on standard
error, not in an error report, not in a log line.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mlfleet.client.models import Role
from mlfleet.commands import render
from mlfleet.commands.context import Output, OutputOption, connect, emit, fleet_command

keys_app = typer.Typer(help="API keys and their roles (needs an admin key).", no_args_is_help=True)


@keys_app.command("create")
@fleet_command
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who or what the key is for; the audit log names its actions so.")],
    role: Annotated[Role, typer.Option(help="viewer (read), scientist (register), deployer (traffic, rollouts, "
                                            "feedback) or admin (keys).")],
    rate_limit: Annotated[int | None, typer.Option(
        min=1, max=1_000_000, help="Requests per minute the key may make to each service replica (429 above); "
                                   "unlimited when left out.")] = None,
    output: OutputOption = Output.table,
) -> None:
    """Create a key; its secret is printed this once (with --output json: the API's answer, secret included)."""
    answer = connect(ctx).create_key(name, role, rate_limit_per_minute=rate_limit)
    emit(output, answer, lambda out: render.key_created(answer, out))


@keys_app.command("list")
@fleet_command
def list_(ctx: typer.Context, output: OutputOption = Output.table) -> None:
    """Every key with its role and prefix (never its secret), revoked ones included."""
    answer = connect(ctx).list_keys()
    emit(output, answer, lambda out: render.keys(answer, out))


@keys_app.command("revoke")
@fleet_command
def revoke(ctx: typer.Context, key_id: Annotated[int, typer.Argument(min=1, help="The key's id (see `keys list`).")],
           output: OutputOption = Output.table) -> None:
    """Revoke a key at once."""
    answer = connect(ctx).revoke_key(key_id)
    emit(output, answer, lambda out: render.key(answer, out))


@fleet_command
def whoami(ctx: typer.Context, output: OutputOption = Output.table) -> None:
    """The name and role of the key in use."""
    answer = connect(ctx).whoami()
    emit(output, answer, lambda out: render.identity(answer, out))
