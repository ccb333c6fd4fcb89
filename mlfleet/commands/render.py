"""Rich renderings of the API's answers, for people (``--output table``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.console import Console, Group
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from mlfleet.client import models as m


def when(moment: datetime | float | None) -> str:
    if moment is None:
        return "-"
    if isinstance(moment, int | float):
        moment = datetime.fromtimestamp(moment).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def compact(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fields(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value if isinstance(value, Text) else str(value))
    return table


def models(answer: m.ModelList, out: Console) -> None:
    table = Table("MODEL", "DESCRIPTION", "MIN AUC", "MIN ACCURACY", "CREATED", title=f"{answer.count} models",
                  title_justify="left")
    for model in answer.data:
        table.add_row(model.name, compact(model.description, 50), number(model.gates.min_auc, 2),
                      number(model.gates.min_accuracy, 2), when(model.created_at))
    out.print(table)


def model(answer: m.ModelPublic, out: Console) -> None:
    out.print(fields(answer.name, [("description", answer.description or "-"),
                                   ("gates", f"min_auc {number(answer.gates.min_auc, 2)}, "
                                             f"min_accuracy {number(answer.gates.min_accuracy, 2)}"),
                                   ("created", when(answer.created_at))]))


def serving(traffic: m.TrafficPublic, version: int) -> str:
    """What share of traffic ``version`` gets: ``stable``, ``canary 10 %``, ``shadow`` (its status is its validation
    state, not this)."""
    if version == traffic.canary:
        return f"canary {traffic.canary_percent:g} %"
    roles = [role for role, number in (("stable", traffic.stable), ("shadow", traffic.shadow)) if number == version]
    return ", ".join(roles) or "-"


def versions(answer: m.VersionList, out: Console, traffic: m.TrafficPublic) -> None:
    table = Table("VERSION", "STATUS", "SERVING", "AUC", "ACCURACY", "INPUTS", "SHA256", "CODE", "CREATED",
                  title=f"{answer.count} versions", title_justify="left")
    for v in answer.data:
        table.add_row(str(v.version), v.status, serving(traffic, v.version), number(v.metrics.get("auc")),
                      number(v.metrics.get("accuracy")), str(len(v.signature.inputs)), v.sha256[:12],
                      (v.lineage.code_revision or "-")[:12], when(v.created_at))
    out.print(table)


def version(answer: m.VersionPublic, out: Console) -> None:
    out.print(fields(f"{answer.model} v{answer.version}", [
        ("status", answer.status),
        ("sha256", answer.sha256),
        ("size", f"{answer.size_bytes:,} bytes"),
        ("metrics", ", ".join(f"{k} {v:.4f}" for k, v in answer.metrics.items()) or "-"),
        ("dataset", answer.lineage.dataset_hash or "-"),
        ("code", answer.lineage.code_revision or "-"),
        ("params", compact(answer.lineage.params, 100)),
        ("entities", ", ".join(answer.signature.entities) or "-"),
        ("description", answer.description or "-"),
        ("created", when(answer.created_at)),
    ]))
    inputs = Table("#", "INPUT", "SOURCE", "FEATURE", "DEFAULT", title="signature", title_justify="left")
    for i, item in enumerate(answer.signature.inputs):
        inputs.add_row(str(i), item.name, item.source, item.feature or "-", "-" if item.default is None else str(item.default))
    out.print(inputs)


def traffic(answer: m.TrafficPublic, out: Console) -> None:
    canary = f"v{answer.canary} at {answer.canary_percent:g} %" if answer.canary else "-"
    out.print(fields(f"{answer.model} traffic", [
        ("stable", f"v{answer.stable}" if answer.stable else "- (not set)"),
        ("canary", canary),
        ("shadow", f"v{answer.shadow}" if answer.shadow else "-"),
        ("revision", answer.revision),
        ("updated", when(answer.updated_at)),
    ]))


STATE_STYLE = {"running": "cyan", "paused": "yellow", "awaiting_approval": "magenta", "promoted": "green",
               "rolled_back": "red", "aborted": "red"}


def rollout(answer: m.RolloutPublic) -> Group:
    """The rollout's state, its step progress and its verdicts (also the live view of ``--watch``)."""
    state = Text(answer.state.value, style=f"bold {STATE_STYLE.get(answer.state.value, '')}")
    steps = " → ".join(f"[bold]{s:g}[/]" if i == answer.step_index else f"{s:g}" for i, s in enumerate(answer.steps))
    done = len(answer.steps) if answer.state is m.RolloutState.promoted else answer.step_index
    header = fields(f"{answer.model} rollout #{answer.id}", [
        ("state", state),
        ("candidate", f"v{answer.candidate} (baseline v{answer.baseline})"),
        ("canary", f"{answer.canary_percent:g} %"),
        ("steps", Text.from_markup(steps + " %")),
        ("failures", f"{answer.failures} of {answer.max_failures} allowed"),
        ("started", f"{when(answer.created_at)} by {answer.created_by}"),
    ] + ([("reason", answer.reason)] if answer.reason else []))
    bar = ProgressBar(total=len(answer.steps), completed=done, width=40)
    history = Table("AT", "CANARY %", "VERDICT", "REASONS", title="verdicts", title_justify="left")
    for step in answer.history[-10:]:
        history.add_row(when(step.at), f"{step.canary_percent:g}", step.verdict, compact("; ".join(step.reasons), 70))
    parts = [header, bar, history] if answer.history else [header, bar]
    if answer.state is m.RolloutState.awaiting_approval:
        parts.append(Text(f"waiting for: mlfleet rollout approve {answer.model}", style="magenta"))
    return Group(*parts)


def rollouts(answer: m.RolloutList, out: Console) -> None:
    table = Table("ID", "STATE", "CANDIDATE", "BASELINE", "CANARY %", "STEP", "CREATED", title=f"{answer.count} rollouts",
                  title_justify="left")
    for r in answer.data:
        table.add_row(str(r.id), r.state.value, f"v{r.candidate}", f"v{r.baseline}", f"{r.canary_percent:g}",
                      f"{r.step_index + 1}/{len(r.steps)}", when(r.created_at))
    out.print(table)


def audit(answer: m.AuditList, out: Console) -> None:
    more = f" (older: --before {answer.next_before_id})" if answer.next_before_id is not None else ""
    table = Table("AT", "ACTOR", "ACTION", "MODEL", "VERSION", "DETAIL", title=f"{answer.count} events{more}",
                  title_justify="left")
    for event in answer.data:
        table.add_row(when(event.at), event.actor, event.action, event.model or "-",
                      "-" if event.version is None else str(event.version), compact(event.detail, 60))
    out.print(table)


def prediction(answer: m.PredictResponse, out: Console) -> None:
    table = Table("#", "LABEL", "SCORE", "PROBABILITIES",
                  title=f"{answer.model} v{answer.version} ({answer.variant}), request {answer.request_id}",
                  title_justify="left")
    for i, p in enumerate(answer.predictions):
        table.add_row(str(i), str(p.label), number(p.score, 4), ", ".join(number(x, 4) for x in p.probabilities))
    out.print(table)


def metrics(answer: m.ModelMetrics, out: Console) -> None:
    window = answer.window
    title = f"{answer.model}, {when(window.start)} to {when(window.end)} ({window.bucket_s} s buckets)"
    table = Table("VERSION", "REQUESTS", "ERRORS", "ERROR RATE", "P50 MS", "P99 MS", "ACCURACY", "LABELLED",
                  title=title, title_justify="left")
    for v in answer.versions:
        latency = v.latency_ms
        table.add_row("-" if v.version is None else f"v{v.version}", f"{v.requests:,}", f"{v.errors:,}",
                      f"{v.error_rate:.2%}", number(latency and latency.p50, 1), number(latency and latency.p99, 1),
                      number(v.quality and v.quality.accuracy), str(v.quality.labelled if v.quality else 0))
    out.print(table)


def drift(answer: m.DriftReport, out: Console) -> None:
    out.print(fields(f"{answer.model} v{answer.version} drift", [
        ("verdict", answer.verdict),
        ("window", f"{answer.window.n:,} instances, {when(answer.window.start)} – {when(answer.window.end)}"),
        ("drifted", ", ".join(answer.drifted_features) or "-"),
        ("evaluated", when(answer.evaluated_at)),
    ]))
    table = Table("FEATURE", "KIND", "N", "KS", "JS", "PSI", "P-VALUE", "ACTION", title_justify="left")
    for f in answer.features + ([answer.scores] if answer.scores else []):
        table.add_row(f.feature, f.kind, f"{f.n:,}", number(f.ks), number(f.js), number(f.psi), f"{f.p_value:.2g}",
                      f.action)
    out.print(table)


def alerts(answer: m.AlertList, out: Console) -> None:
    table = Table("FIRED", "STATUS", "SEVERITY", "RULE", "MODEL", "VERSION", "ACTION", "SUMMARY",
                  title=f"{answer.count} alerts", title_justify="left")
    for a in answer.data:
        status = f"resolved {when(a.resolved_at)}" if a.status == "resolved" and a.resolved_at else a.status
        table.add_row(when(a.fired_at), status, a.severity, a.rule, a.model,
                      "-" if a.version is None else f"v{a.version}", a.action or "-", compact(a.summary, 70))
    out.print(table)


def identity(answer: m.Identity, out: Console) -> None:
    limit = [("rate limit", f"{answer.rate_limit_per_minute}/min")] if answer.rate_limit_per_minute else []
    out.print(fields("whoami", [("name", answer.name), ("role", answer.role.value), *limit]))


def key_created(answer: m.KeyCreated, out: Console) -> None:
    """The new key's fields and a label on standard error, its secret alone on standard output (never wrapped): so
    ``mlfleet keys create … > ci.key`` writes a key file holding the key and nothing else."""
    told = Console(stderr=True, highlight=False, soft_wrap=False, markup=False)
    limit = [("rate limit", f"{answer.rate_limit_per_minute}/min")] if answer.rate_limit_per_minute else []
    told.print(fields(f"key #{answer.id} created", [("name", answer.name), ("role", answer.role.value),
                                                     ("created", when(answer.created_at)), *limit]))
    told.print("API key (shown only this once, on standard output; store it now, e.g. in MLFLEET_API_KEY_FILE):",
               style="bold yellow")
    out.print(answer.key, soft_wrap=True)


def key(answer: m.KeyPublic, out: Console) -> None:
    out.print(fields(f"key #{answer.id}", [
        ("name", answer.name), ("role", answer.role.value), ("prefix", answer.prefix),
        ("created", f"{when(answer.created_at)} by {answer.created_by}"),
        ("revoked", when(answer.revoked_at)),
    ]))


def keys(answer: m.KeyList, out: Console) -> None:
    table = Table("ID", "NAME", "ROLE", "PREFIX", "CREATED BY", "CREATED", "REVOKED", title=f"{answer.count} keys",
                  title_justify="left")
    for k in answer.data:
        table.add_row(str(k.id), k.name, k.role.value, k.prefix, k.created_by, when(k.created_at), when(k.revoked_at))
    out.print(table)
