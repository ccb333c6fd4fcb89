"""``mlfleet keys …`` and ``mlfleet whoami`` against the real registry, and each role's reach through the CLI."""

from __future__ import annotations

import json

import pytest

from mlfleet.cli import app
from mlfleet.client import Fleet
from mlfleet.client.models import KeyCreated
from mlfleet.commands.context import Connection, ExitCode
from tests.client.conftest import MODEL, as_json


def test_a_new_key_is_printed_once_on_stdout_and_works(cli, api, client_fleet):
    created = cli("keys", "create", "cli-analyst", "--role", "viewer")
    secret = created.stdout.strip()
    assert created.stdout == secret + "\n", "standard output holds the key alone: `> file` makes a key file"
    assert secret.startswith("mlf_") and "shown only this once" in created.stderr and "cli-analyst" in created.stderr
    assert secret not in created.stderr
    as_analyst = client_fleet.env(api_key=secret)
    assert as_json(cli("whoami", "--output", "json", env=as_analyst)) == {"name": "cli-analyst", "role": "viewer"}
    assert "cli-analyst" in cli("whoami", env=as_analyst).stdout

    listed = as_json(cli("keys", "list", "--output", "json"))
    assert listed == api("registry", "/v1/keys")
    mine = next(k for k in listed["data"] if k["name"] == "cli-analyst")
    assert secret.startswith(mine["prefix"]) and secret not in json.dumps(listed)
    assert "cli-analyst" in cli("keys", "list").stdout

    revoked = as_json(cli("keys", "revoke", str(mine["id"]), "--output", "json"))
    assert revoked["id"] == mine["id"] and revoked["revoked_at"] is not None
    refused = cli("whoami", env=as_analyst, expect=ExitCode.denied)
    assert "401" in refused.stderr and secret not in refused.stdout + refused.stderr


def test_keys_create_json_is_the_apis_body(cli):
    body = as_json(cli("keys", "create", "cli-ci", "--role", "deployer", "--output", "json"))
    assert body.keys() == set(KeyCreated.model_fields) and body["key"].startswith("mlf_")
    listed = next(k for k in as_json(cli("keys", "list", "--output", "json"))["data"] if k["id"] == body["id"])
    shared = ("name", "role", "created_at")
    assert {k: listed[k] for k in shared} == {k: body[k] for k in shared}
    assert body["key"].startswith(listed["prefix"])


def test_a_rate_limited_key_from_the_cli_and_from_the_client(cli, client_fleet):
    body = as_json(cli("keys", "create", "cli-throttled", "--role", "viewer", "--rate-limit", "120",
                       "--output", "json"))
    assert body["rate_limit_per_minute"] == 120
    assert "60/min" in cli("keys", "create", "cli-throttled-table", "--role", "viewer", "--rate-limit", "60").stderr
    once = as_json(cli("keys", "create", "cli-once", "--role", "viewer", "--rate-limit", "1", "--output", "json"))
    as_once = client_fleet.env(api_key=once["key"])
    cli("models", "list", env=as_once)
    throttled = cli("models", "list", env=as_once, expect=ExitCode.unavailable)  # try again later, like a 503
    assert "429" in throttled.stderr and "1 requests a minute" in throttled.stderr
    with Fleet(config=client_fleet.config()) as fleet:
        created = fleet.create_key("client-throttled", "viewer", rate_limit_per_minute=30)
        unlimited = fleet.create_key("client-unlimited", "viewer")
    assert (created.rate_limit_per_minute, unlimited.rate_limit_per_minute) == (30, None)


def test_secrets_stay_out_of_reprs_and_tracebacks():
    created = KeyCreated(id=1, name="n", role="viewer", key="mlf_secret", created_at="2026-01-01T00:00:00Z")
    assert "mlf_secret" not in repr(created) and "mlf_secret" not in repr(Connection(api_key="mlf_secret"))
    assert app.pretty_exceptions_show_locals is False


@pytest.fixture(scope="module")
def role_env(cli, client_fleet) -> dict[str, dict]:
    """The CLI's environment for a viewer, a scientist and a deployer key, each made with the admin key."""
    env = {}
    for role in ("viewer", "scientist", "deployer"):
        key = as_json(cli("keys", "create", f"cli-{role}", "--role", role, "--output", "json"))["key"]
        env[role] = client_fleet.env(api_key=key)
    return env


def role_table(*, stable: int, candidate: int, register: list[str]) -> list[tuple[str, list[str], ExitCode, dict]]:
    """Role, command, exit code and fields of its JSON answer; ``candidate`` is the version the scientist registers."""
    return [
        ("viewer", ["models", "list"], ExitCode.ok, {}),
        ("viewer", ["traffic", "set", MODEL, "--stable", str(stable)], ExitCode.denied, {}),
        ("scientist", register, ExitCode.ok, {"version": candidate}),
        ("scientist", ["rollout", "start", MODEL, "--candidate", str(candidate)], ExitCode.denied, {}),
        ("deployer", ["rollout", "start", MODEL, "--candidate", str(candidate), "--interval", "600"], ExitCode.ok,
         {"state": "running", "candidate": candidate, "created_by": "cli-deployer"}),
        ("deployer", ["rollout", "abort", MODEL], ExitCode.ok, {"state": "aborted", "candidate": candidate}),
    ]


def test_each_role_may_do_what_it_includes_and_no_more(cli, role_env, fleet_client, registered, cli_artifacts):
    table = role_table(stable=fleet_client.get_traffic(MODEL).stable,
                       candidate=fleet_client.list_versions(MODEL).data[-1].version + 1,
                       register=cli_artifacts.register_args())
    for role, command, code, fields in table:
        result = cli(*command, "--output", "json", env=role_env[role], expect=code)
        if code is ExitCode.denied:
            problem = json.loads(result.stderr)
            assert (problem["status"], problem["code"]) == (403, "forbidden"), (role, command)
            assert f"is {role}" in problem["detail"], problem
        else:
            answer = as_json(result)
            assert {k: answer[k] for k in fields} == fields, (role, command)
