"""What every fleet command shares: the connection, ``--output``, exit codes and error reports.

Exit codes (stable, for scripts):

====  =====================================================================================
0     success
1     the fleet failed (5xx other than 503/504) or something unexpected happened
2     the command line or the configuration is wrong
3     not found (model, version, rollout)
4     not allowed: no API key, an unknown key, or a role too low (401, 403)
5     conflict, e.g. a rollout already running (409)
6     refused: invalid input, a version the validation gate rejects (400, 413, 415, 422)
7     unreachable or unavailable: no answer, 503 after retries, 504 (a change sent whose answer never came says
      it may have been applied: check before sending it again)
8     a watched rollout ended without promotion (rolled back or aborted)
9     a traffic change the registry applied that the gateway did not confirm serving in time
====  =====================================================================================
"""

from __future__ import annotations

import functools
import json
import math
import sys
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Annotated, Any
from collections.abc import Callable

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.text import Text

from mlfleet.client import ClientConfig, Fleet
from mlfleet.client import errors as e
from mlfleet.client.config import ConfigError


class ExitCode(IntEnum):
    ok = 0
    failure = 1
    usage = 2
    not_found = 3
    denied = 4
    conflict = 5
    refused = 6
    unavailable = 7
    rollout_failed = 8
    not_confirmed = 9


class Output(StrEnum):
    table = "table"
    json = "json"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="`table` for people, `json` for scripts.")]


@dataclass
class Connection:
    """The root command's connection flags; the client is made on first use."""

    url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    registry_url: str | None = None
    gateway_url: str | None = None
    monitor_url: str | None = None
    features_url: str | None = None
    config_file: Path | None = None
    _fleet: Fleet | None = None

    def fleet(self) -> Fleet:
        if self._fleet is None:
            config = ClientConfig.resolve(url=self.url, api_key=self.api_key, config_file=self.config_file,
                                          registry_url=self.registry_url, gateway_url=self.gateway_url,
                                          monitor_url=self.monitor_url, features_url=self.features_url)
            self._fleet = Fleet(config=config)
        return self._fleet

    def close(self) -> None:
        if self._fleet is not None:
            self._fleet.close()


def connect(ctx: typer.Context) -> Fleet:
    connection = ctx.find_root().obj
    if not isinstance(connection, Connection):
        connection = ctx.find_root().obj = Connection()
    return connection.fleet()


def console() -> Console:
    """Standard output for tables and fields. Markup off: what is printed comes from the services (descriptions,
    reasons, input names such as ``amount[usd]``), and Rich would read its brackets as markup, dropping text or
    failing on it."""
    return Console(highlight=False, soft_wrap=False, markup=False)


def emit(output: Output, answer: BaseModel | dict | list, human: Callable[[Console], None]) -> None:
    """Print ``answer`` as JSON (exactly the fields the API answered) or call ``human`` to draw it."""
    if output is Output.json:
        data = answer.model_dump(mode="json", exclude_unset=True) if isinstance(answer, BaseModel) else answer
        typer.echo(json.dumps(data, indent=2))
    else:
        human(console())


def exit_code(error: Exception) -> ExitCode:
    if isinstance(error, e.NotFound):
        return ExitCode.not_found
    if isinstance(error, e.Unauthorized | e.Forbidden):
        return ExitCode.denied
    if isinstance(error, e.Conflict):
        return ExitCode.conflict
    if isinstance(error, e.InvalidInput | e.BadRequest | e.PackagingError | e.InvalidInstances):
        return ExitCode.refused
    if isinstance(error, e.NotConfirmed):
        return ExitCode.not_confirmed
    if isinstance(error, e.FleetUnreachable | e.ServiceUnavailable | e.GatewayTimeout | e.RateLimited):
        return ExitCode.unavailable
    if isinstance(error, ConfigError):
        return ExitCode.usage
    return ExitCode.failure


def report(error: Exception, output: Output) -> None:
    """The error on stderr: the problem document with ``--output json``, readable lines otherwise."""
    if output is Output.json:
        body = error.problem | {"status": error.status} if isinstance(error, e.ApiError) else {"detail": str(error)}
        typer.echo(json.dumps(body, indent=2), err=True)
        return
    err = Console(stderr=True, highlight=False, markup=False)
    err.print(Text.assemble(("error:", "bold red"), f" {error}"))
    if isinstance(error, e.Unauthorized):
        err.print("  the CLI sends the key in MLFLEET_API_KEY, MLFLEET_API_KEY_FILE or the config file's "
                  "api_key_file; a local fleet's admin key is .mlfleet/secrets/admin.key")
    for reason in getattr(error, "reasons", []):
        err.print(f"  - {reason}")
    for field_error in getattr(error, "errors", []):
        where = ".".join(str(p) for p in field_error.get("loc", []))
        err.print(f"  - {where}: {field_error.get('msg', '')}")


HANDLED = (e.FleetError,)


def refuse_non_finite(args: tuple[Any, ...], options: dict[str, Any]) -> None:
    """A usage error (exit 2) for a number option given as ``nan`` or ``inf``, which click accepts as floats and no
    fleet API does."""
    command = next((a.command for a in (*args, *options.values()) if hasattr(a, "command")), None)
    for name, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            params = command.params if command is not None else []
            raise typer.BadParameter(f"{value} is not a finite number",
                                     param=next((p for p in params if p.name == name), None))


def fleet_command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command, turning client errors into a report on stderr and a meaningful exit code."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        output = kwargs.get("output", Output.table)
        refuse_non_finite(args, kwargs)
        try:
            return fn(*args, **kwargs)
        except HANDLED as error:
            report(error, output)
            raise typer.Exit(exit_code(error)) from None
        except KeyboardInterrupt:
            sys.exit(130)

    return run
