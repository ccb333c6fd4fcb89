"""``mlfleet predict``, ``mlfleet metrics``, ``mlfleet drift``, ``mlfleet alerts`` and ``mlfleet audit``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mlfleet.commands import render
from mlfleet.commands.context import Output, OutputOption, connect, emit, fleet_command

ModelArg = Annotated[str, typer.Argument(help="Model name.")]


def read_instances(text: str) -> tuple[list[dict[str, Any]], str | None]:
    """Instances and routing key from ``--json``: an object, a list of objects or a whole predict request;
    ``@FILE`` reads a file and ``-`` standard input."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"cannot read {text[1:]}: {exc}", param_hint="--json") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--json") from None
    if isinstance(body, dict) and "instances" in body:
        return body["instances"], body.get("routing_key")
    if isinstance(body, dict):
        return [body], None
    if isinstance(body, list) and body and all(isinstance(i, dict) for i in body):
        return body, None
    raise typer.BadParameter("expected an object, a non-empty list of objects or {\"instances\": [...]}",
                             param_hint="--json")


@fleet_command
def predict(
    ctx: typer.Context,
    model: ModelArg,
    instances: Annotated[str, typer.Option("--json", help="Instance(s) as JSON; @FILE or - for stdin.")],
    routing_key: Annotated[str | None, typer.Option(help="Key that keeps a caller on one variant.")] = None,
    version: Annotated[int | None, typer.Option(min=1, help="Pin a version the traffic policy names.")] = None,
    output: OutputOption = Output.table,
) -> None:
    """Score instances through the gateway."""
    rows, key = read_instances(instances)
    answer = connect(ctx).predict(model, rows, routing_key=routing_key or key, version=version)
    emit(output, answer, lambda out: render.prediction(answer, out))


@fleet_command
def metrics(
    ctx: typer.Context,
    model: ModelArg,
    window_s: Annotated[float | None, typer.Option("--window", min=1, help="The last N seconds (default 300).")] = None,
    output: OutputOption = Output.table,
) -> None:
    """Live per-version requests, errors, latency and accuracy."""
    answer = connect(ctx).metrics(model, window_s=window_s)
    emit(output, answer, lambda out: render.metrics(answer, out))


@fleet_command
def drift(
    ctx: typer.Context,
    model: ModelArg,
    version: Annotated[int | None, typer.Option(min=1, help="Version (default: the stable one; the newest seen when there is none).")] = None,
    output: OutputOption = Output.table,
) -> None:
    """Live inputs and scores compared with the version's training profile."""
    fleet = connect(ctx)
    answer = fleet.drift(model, version=version if version is not None else fleet.get_traffic(model).stable)
    emit(output, answer, lambda out: render.drift(answer, out))


@fleet_command
def alerts(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Only this model's alerts.")] = None,
    rule: Annotated[str | None, typer.Option(help="Only drift, accuracy, error_rate or latency alerts.")] = None,
    active: Annotated[bool, typer.Option("--active", help="Only the incidents firing now.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most alerts, newest first.")] = 100,
    output: OutputOption = Output.table,
) -> None:
    """Alerts fired and resolved (drift, accuracy, error rate, latency), newest first; --active: what fires now."""
    answer = connect(ctx).alerts(model=model, rule=rule, active=active, limit=limit)
    emit(output, answer, lambda out: render.alerts(answer, out))


@fleet_command
def audit(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Only this model's events.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor's events (a key's name, controller, "
                                                   "reconciler).")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action (traffic.set), or a family (rollout.).")] = None,
    before: Annotated[int | None, typer.Option("--before", min=1, help="Only events older than this id (the "
                                                                       "next page).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most events, newest first.")] = 100,
    output: OutputOption = Output.table,
) -> None:
    """Who did what, newest first; the table's title says how to ask for the next page."""
    answer = connect(ctx).audit(model=model, actor=actor, action=action, before_id=before, limit=limit)
    emit(output, answer, lambda out: render.audit(answer, out))
