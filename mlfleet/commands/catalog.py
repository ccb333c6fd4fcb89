"""``mlfleet models …``, ``mlfleet versions …`` and ``mlfleet register``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from mlfleet.client.models import Signature
from mlfleet.client.errors import PackagingError
from mlfleet.commands import render
from mlfleet.commands.context import Output, OutputOption, connect, emit, fleet_command

models_app = typer.Typer(help="Registered models.", no_args_is_help=True)
versions_app = typer.Typer(help="Versions of a model.", no_args_is_help=True)

ModelArg = Annotated[str, typer.Argument(help="Model name.")]


@models_app.command("list")
@fleet_command
def list_models(ctx: typer.Context, output: OutputOption = Output.table) -> None:
    """Every registered model with its validation gates."""
    answer = connect(ctx).list_models()
    emit(output, answer, lambda out: render.models(answer, out))


@models_app.command("show")
@fleet_command
def show_model(ctx: typer.Context, model: ModelArg, output: OutputOption = Output.table) -> None:
    """One model."""
    answer = connect(ctx).get_model(model)
    emit(output, answer, lambda out: render.model(answer, out))


def _gate(value: str | None) -> float | None:
    """A gate's threshold, or ``off``."""
    if value is None or value == "off":
        return None
    try:
        threshold = float(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither a number in [0, 1] nor 'off'") from None
    if not 0.0 <= threshold <= 1.0:
        raise typer.BadParameter(f"{value!r} is not in [0, 1]")
    return threshold


@models_app.command("update")
@fleet_command
def update_model(
    ctx: typer.Context,
    model: ModelArg,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
    min_auc: Annotated[str | None, typer.Option("--min-auc", help="Lowest `auc` a new version may report, or off.")] = None,
    min_accuracy: Annotated[str | None, typer.Option("--min-accuracy",
                                                     help="Lowest `accuracy` a new version may report, or off.")] = None,
    output: OutputOption = Output.table,
) -> None:
    """Change a model's description or validation gates (an admin key); gates left out are kept."""
    gates = {name: _gate(value) for name, value in (("min_auc", min_auc), ("min_accuracy", min_accuracy))
             if value is not None}
    if description is None and not gates:
        raise typer.BadParameter("nothing to change: give --description, --min-auc or --min-accuracy")
    answer = connect(ctx).update_model(model, description=description, gates=gates or None)
    emit(output, answer, lambda out: render.model(answer, out))


@versions_app.command("list")
@fleet_command
def list_versions(ctx: typer.Context, model: ModelArg, output: OutputOption = Output.table) -> None:
    """A model's versions with their metrics and provenance, and which of them serve (the table's SERVING column)."""
    fleet = connect(ctx)
    answer = fleet.list_versions(model)
    emit(output, answer, lambda out: render.versions(answer, out, fleet.get_traffic(model)))


@versions_app.command("show")
@fleet_command
def show_version(ctx: typer.Context, model: ModelArg, version: Annotated[int, typer.Argument(min=1)],
                 output: OutputOption = Output.table) -> None:
    """One version: signature, metrics, lineage."""
    answer = connect(ctx).get_version(model, version)
    emit(output, answer, lambda out: render.version(answer, out))


def read_signature(path: Path) -> Signature:
    """A signature from YAML or JSON (the API's shape: ``inputs``, ``entities``, ``output``)."""
    try:
        return Signature.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise PackagingError(f"{path}: not a usable signature: {exc}") from None


def parse_metrics(pairs: list[str]) -> dict[str, float]:
    metrics = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            metrics[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected NAME=NUMBER, got {pair!r}", param_hint="--metric")
    return metrics


@fleet_command
def register(
    ctx: typer.Context,
    artifact: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="The ONNX file.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model to add the version to (created if new).")],
    signature: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Signature, YAML or JSON.")],
    profile: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                                 help="Parquet training data: the reference profile for drift checks.")] = None,
    labels: Annotated[str | None, typer.Option(help="Label column of --profile: compute metrics on that data.")] = None,
    metric: Annotated[list[str], typer.Option(help="A holdout metric, NAME=NUMBER (repeatable); wins over computed ones.")] = [],  # noqa: B006
    description: Annotated[str, typer.Option(help="What this version is.")] = "",
    output: OutputOption = Output.table,
) -> None:
    """Register an ONNX file as a new version of a model."""
    import pandas as pd

    frame = pd.read_parquet(profile) if profile else None
    if labels and frame is None:
        raise typer.BadParameter("--labels needs --profile", param_hint="--labels")
    answer = connect(ctx).register(model, artifact, frame, signature=read_signature(signature),
                                   metrics=parse_metrics(metric), labels=labels, description=description)
    emit(output, answer, lambda out: render.version(answer, out))
