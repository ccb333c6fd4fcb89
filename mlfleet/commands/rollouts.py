"""``mlfleet rollout start|list|status|pause|resume|approve|promote|abort``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.live import Live

from mlfleet.client import Fleet, NotFound
from mlfleet.client.models import RolloutChecks, RolloutPublic, RolloutState
from mlfleet.commands import render
from mlfleet.commands.context import ExitCode, Output, OutputOption, connect, console, emit, fleet_command

rollout_app = typer.Typer(help="Canary rollouts: promoted step by step on live metrics, or rolled back.",
                          no_args_is_help=True)

ModelArg = Annotated[str, typer.Argument(help="Model name.")]
IdOption = Annotated[int | None, typer.Option("--id", min=1, help="Rollout id (default: the model's latest).")]
ReasonOption = Annotated[str | None, typer.Option(help="Why, for the audit log.")]


def parse_steps(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected percentages like 10,25,50,100, got {text!r}", param_hint="--steps") from None


def resolve(fleet: Fleet, model: str, rollout_id: int | None) -> int:
    if rollout_id is not None:
        return rollout_id
    latest = fleet.latest_rollout(model)
    if latest is None:
        raise NotFound({"code": "not-found", "title": "No rollout", "detail": f"model {model!r} has no rollout"},
                       status=404, method="GET", url=f"{fleet.config.registry_url}/v1/models/{model}/rollouts")
    return latest.id


def show(output: Output, answer: RolloutPublic) -> None:
    emit(output, answer, lambda out: out.print(render.rollout(answer)))


@rollout_app.command("start")
@fleet_command
def start(
    ctx: typer.Context,
    model: ModelArg,
    candidate: Annotated[int, typer.Option(min=1, help="Version to roll out; the current stable is the baseline.")],
    steps: Annotated[str | None, typer.Option(help="Canary percentages, e.g. 10,25,50,75,100.")] = None,
    interval_s: Annotated[float | None, typer.Option("--interval", help="Seconds of traffic judged per step.")] = None,
    min_requests: Annotated[int | None, typer.Option(help="Canary requests a step needs for a verdict.")] = None,
    max_error_rate_increase: Annotated[float | None, typer.Option(help="Allowed error-rate increase (absolute).")] = None,
    max_p99_latency_ratio: Annotated[float | None, typer.Option(help="Allowed canary/stable p99 latency ratio.")] = None,
    latency_tolerance_ms: Annotated[float | None, typer.Option(
        "--latency-tolerance", help="Milliseconds of canary p99 above stable's that never fail a step.")] = None,
    min_accuracy_delta: Annotated[float | None, typer.Option(help="Required canary minus stable accuracy.")] = None,
    latency_test_alpha: Annotated[float | None, typer.Option(help="Significance of the latency test.")] = None,
    rate_test_alpha: Annotated[float | None, typer.Option(help="Significance of the error-rate and accuracy tests.")] = None,
    max_failures: Annotated[int | None, typer.Option(help="Failed verdicts before rolling back.")] = None,
    require_approval: Annotated[bool, typer.Option(help="Wait for `approve` before promoting.")] = False,
    progress_deadline_s: Annotated[float | None, typer.Option(
        "--progress-deadline", help="Seconds a step may hold without a verdict before the rollout aborts.")] = None,
    allow_failed: Annotated[bool, typer.Option(help="Roll out a candidate that failed a rollout before.")] = False,
    output: OutputOption = Output.table,
) -> None:
    """Start a canary rollout of a version; unset options keep the registry's defaults."""
    checks = RolloutChecks(max_error_rate_increase=max_error_rate_increase, max_p99_latency_ratio=max_p99_latency_ratio,
                           latency_tolerance_ms=latency_tolerance_ms, min_accuracy_delta=min_accuracy_delta, latency_test_alpha=latency_test_alpha,
                           rate_test_alpha=rate_test_alpha)
    settings = {"steps": parse_steps(steps), "interval_s": interval_s, "min_requests": min_requests,
                "max_failures": max_failures, "require_approval": require_approval or None,
                "progress_deadline_s": progress_deadline_s,
                "checks": checks if checks.model_dump(exclude_none=True) else None}
    answer = connect(ctx).start_rollout(model, candidate, allow_failed=allow_failed,
                                        **{k: v for k, v in settings.items() if v is not None})
    show(output, answer)


@rollout_app.command("list")
@fleet_command
def list_(
    ctx: typer.Context,
    model: ModelArg,
    state: Annotated[RolloutState | None, typer.Option("--state", help="Only rollouts in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Most rollouts shown, newest first.")] = 100,
    output: OutputOption = Output.table,
) -> None:
    """A model's rollouts, newest first."""
    answer = connect(ctx).list_rollouts(model, state=state.value if state else None, limit=limit)
    emit(output, answer, lambda out: render.rollouts(answer, out))


@rollout_app.command("status")
@fleet_command
def status(
    ctx: typer.Context,
    model: ModelArg,
    rollout_id: IdOption = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow the steps live until the rollout ends; "
                                        "exit 0 when promoted, 8 when rolled back or aborted.")] = False,
    every_s: Annotated[float, typer.Option("--every", min=0.1, help="Seconds between polls with --watch.")] = 2.0,
    output: OutputOption = Output.table,
) -> None:
    """A rollout's state, step progress and verdicts (with --output json --watch: one JSON line per change)."""
    fleet = connect(ctx)
    rollout_id = resolve(fleet, model, rollout_id)
    if not watch:
        show(output, fleet.get_rollout(model, rollout_id))
        return
    final = None
    if output is Output.json:
        for final in fleet.watch_rollout(model, rollout_id, every_s=every_s):
            typer.echo(json.dumps(final.model_dump(mode="json")), nl=True)
    else:
        with Live(console=console(), auto_refresh=False) as live:
            for final in fleet.watch_rollout(model, rollout_id, every_s=every_s):
                live.update(render.rollout(final), refresh=True)
    if final is not None and final.state is not RolloutState.promoted:
        raise typer.Exit(ExitCode.rollout_failed)


def _action(name: str, summary: str) -> None:
    @rollout_app.command(name, help=summary)
    @fleet_command
    def act(ctx: typer.Context, model: ModelArg, rollout_id: IdOption = None, reason: ReasonOption = None,
            output: OutputOption = Output.table) -> None:
        fleet = connect(ctx)
        answer = getattr(fleet, f"{name}_rollout")(model, resolve(fleet, model, rollout_id), reason=reason)
        show(output, answer)


_action("pause", "Hold the canary at its current share.")
_action("resume", "Go on judging a paused rollout.")
_action("approve", "Allow a rollout that waits for approval to promote.")
_action("promote", "Promote the candidate now, skipping the remaining steps.")
_action("abort", "Stop the rollout and send all traffic back to the baseline.")
