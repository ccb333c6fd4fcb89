"""Pure logic of the client: where settings come from, and which answers are retried."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest
from typer.testing import CliRunner

from mlfleet.cli import app
from mlfleet.client import ClientConfig, ConfigError, Fleet, FleetUnreachable, NotConfirmed, ServiceUnavailable, ServerError
from mlfleet.client import calls
from mlfleet.client.transport import Backoff
from mlfleet.commands import observe
from mlfleet.commands.context import ExitCode, exit_code


def test_arguments_beat_environment_beat_config_file(tmp_path):
    config_file = tmp_path / "config.toml"
    config_file.write_text('url = "http://file-host:8081"\napi_key_file = "key"\nmonitor_url = "http://mon:1"\n')
    (tmp_path / "key").write_text("mlf_from_file\n")
    env = {"MLFLEET_CONFIG": str(config_file), "MLFLEET_GATEWAY_URL": "http://gw-env:9"}
    config = ClientConfig.resolve(env=env, config_file=None)
    assert config.api_key == "mlf_from_file"
    assert config.registry_url == "http://file-host:8081"
    assert config.gateway_url == "http://gw-env:9"
    assert config.monitor_url == "http://mon:1"
    assert config.features_url == "http://file-host:8082"
    overridden = ClientConfig.resolve(url="127.0.0.1:7000", api_key="mlf_flag", env=env)
    assert overridden.registry_url == "http://127.0.0.1:7000" and overridden.api_key == "mlf_flag"
    assert overridden.gateway_url == "http://127.0.0.1:8080", "--url points every service at another fleet"
    assert "mlf_flag" not in repr(overridden)


def test_unknown_settings_are_reported(tmp_path):
    config_file = tmp_path / "config.toml"
    config_file.write_text('registry = "http://x"\n')
    with pytest.raises(ConfigError, match="unknown settings registry"):
        ClientConfig.resolve(env={"MLFLEET_CONFIG": str(config_file)})


@pytest.mark.parametrize(("name", "value"), [("RETRIES", "-1"), ("TIMEOUT_S", "0"), ("TIMEOUT_S", "nan"),
                                             ("TIMEOUT_S", "inf")])
def test_retries_below_zero_and_timeouts_not_above_zero_are_refused(name, value):
    with pytest.raises(ConfigError, match=name.lower()):
        ClientConfig.resolve(env={f"MLFLEET_{name}": value, "MLFLEET_CONFIG": "/nonexistent/config.toml"})


def test_a_key_file_written_with_a_byte_order_mark_gives_the_key(tmp_path):
    (tmp_path / "key").write_bytes("\ufeffmlf_with_bom\r\n".encode())
    config = ClientConfig.resolve(env={"MLFLEET_API_KEY_FILE": str(tmp_path / "key"),
                                       "MLFLEET_CONFIG": "/nonexistent/config.toml"})
    assert config.api_key == "mlf_with_bom"
    (tmp_path / "key").write_text("mlf_in_utf16", encoding="utf-16")
    with pytest.raises(ConfigError, match="not UTF-8"):
        ClientConfig.resolve(env={"MLFLEET_API_KEY_FILE": str(tmp_path / "key"),
                                  "MLFLEET_CONFIG": "/nonexistent/config.toml"})


def fleet_answering(*statuses: int, seen: list) -> Fleet:
    answers = iter(statuses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = next(answers)
        body = {"data": [], "count": 0} if status == 200 else {"status": status, "code": "x", "title": "t", "detail": "d"}
        return httpx.Response(status, content=json.dumps(body), headers={"Retry-After": "0", "Content-Type": (
            "application/json" if status == 200 else "application/problem+json")})

    config = ClientConfig(registry_url="http://registry.test", api_key="mlf_k", retries=2)
    return Fleet(config=config, transport=httpx.MockTransport(handler), backoff=Backoff(base_s=0, cap_s=0))


def test_503_is_retried_until_it_succeeds():
    seen: list = []
    assert fleet_answering(503, 503, 200, seen=seen).list_models().count == 0
    assert len(seen) == 3
    assert seen[0].headers["authorization"] == "Bearer mlf_k"


def test_503_gives_up_after_the_retries_and_500_is_not_retried():
    seen: list = []
    with pytest.raises(ServiceUnavailable):
        fleet_answering(503, 503, 503, seen=seen).list_models()
    assert len(seen) == 3
    seen.clear()
    with pytest.raises(ServerError) as failed:
        fleet_answering(500, 200, seen=seen).list_models()
    assert len(seen) == 1 and failed.value.status == 500 and failed.value.detail == "d"


def test_a_post_is_sent_again_only_on_a_services_own_503():
    """A 503 problem document comes from the service, before it acted; a plain 503 from a proxy in between may come
    after (an upstream reset), and a rollback or a registration sent twice is not the same as once."""
    seen: list = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, text="upstream connect error or disconnect/reset before headers",
                              headers={"Content-Type": "text/plain"})

    config = ClientConfig(registry_url="http://registry.test", gateway_url="http://gateway.test", api_key="mlf_k",
                          retries=3)
    fleet = Fleet(config=config, transport=httpx.MockTransport(handler), backoff=Backoff(base_s=0, cap_s=0))
    with pytest.raises(ServiceUnavailable):
        fleet.rollback("fraud")
    assert len(seen) == 1
    seen.clear()
    with pytest.raises(ServiceUnavailable):
        fleet.list_models()
    assert len(seen) == 4, "a GET is safe to send again"
    seen.clear()
    with pytest.raises(ServiceUnavailable):
        fleet.predict("fraud", {"amount": 1.0})
    assert len(seen) == 4, "a prediction is safe to send again"


def test_a_post_is_sent_again_on_a_services_own_503_problem():
    seen: list = []
    fleet = fleet_answering(503, 200, seen=seen)
    assert fleet.send(calls.Call("registry", "POST", "/v1/models/fraud/rollback", None)) is None
    assert len(seen) == 2


@pytest.mark.parametrize(("args", "option"), [
    (["rollout", "start", "fraud", "--candidate", "3", "--interval", "inf"], "--interval"),
    (["rollout", "start", "fraud", "--candidate", "3", "--max-p99-latency-ratio", "nan"], "--max-p99-latency-ratio"),
])
def test_a_number_option_that_is_not_finite_is_a_usage_error(args, option):
    """click parses `nan` and `inf` as floats; sent on, they made the CLI crash with a traceback (JSON has neither)."""
    result = CliRunner().invoke(app, ["--url", "http://127.0.0.1:9", *args])
    assert result.exit_code == 2 and f"'{option}'" in result.output and "not a finite number" in result.output


def test_predict_from_a_file_that_cannot_be_read_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["predict", "fraud", "--json", f"@{tmp_path / 'absent.json'}"])
    assert result.exit_code == 2 and "cannot read" in result.output and "Traceback" not in result.output


def test_a_traffic_change_the_gateway_does_not_confirm_says_it_was_applied():
    """The registry wrote revision 41; the gateway (stalled) cannot be asked. The caller must learn the change is in
    place, not get a bare timeout that tells a script to send it again."""
    policy = {"model": "fraud", "stable": 3, "canary": 5, "canary_percent": 20.0, "shadow": None, "revision": 41,
              "updated_at": None}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "gateway.test":
            raise httpx.ReadTimeout("stalled", request=request)
        return httpx.Response(200, json=policy)

    config = ClientConfig(registry_url="http://registry.test", gateway_url="http://gateway.test", retries=0)
    fleet = Fleet(config=config, transport=httpx.MockTransport(handler))
    with pytest.raises(NotConfirmed) as raised:
        fleet.set_traffic("fraud", stable=3, canary=5, canary_percent=20, wait=True)
    assert raised.value.revision == 41 and "applied revision 41 of fraud" in str(raised.value)
    assert isinstance(raised.value, TimeoutError), "what wait_until_served raised before"
    assert exit_code(raised.value) == ExitCode.not_confirmed == 9


def test_drift_without_a_version_asks_for_the_stable_one(monkeypatch):
    """The monitor's own default is the newest version it has seen, which after a rollback is the failed canary."""
    asked: list = []

    class Fleet:
        def get_traffic(self, model: str):
            return SimpleNamespace(stable=2)

        def drift(self, model: str, *, version: int | None = None):
            asked.append(version)
            raise FleetUnreachable("http://monitor.test", ConnectionError("not needed"))

    monkeypatch.setattr(observe, "connect", lambda ctx: Fleet())
    assert CliRunner().invoke(app, ["drift", "fraud"]).exit_code == 7
    assert CliRunner().invoke(app, ["drift", "fraud", "--version", "5"]).exit_code == 7
    assert asked == [2, 5]


def test_instances_are_sent_as_plain_json_and_refused_before_sending_when_they_cannot_be():
    import numpy as np
    import pandas as pd

    from mlfleet.client import InvalidInstances
    from mlfleet.client.calls import predict
    from mlfleet.client.instances import instance_rows

    assert instance_rows({"a": np.float32(0.5), "b": np.int64(3), "c": "x"}) == [{"a": 0.5, "b": 3, "c": "x"}]
    frame = pd.DataFrame({"a": [1.0, np.nan], "b": [3, 4]})
    assert instance_rows(frame) == [{"a": 1.0, "b": 3}, {"a": None, "b": 4}], "a missing value is sent as null"
    assert instance_rows([row for _, row in frame.iterrows()]) == [{"a": 1.0, "b": 3.0}, {"a": None, "b": 4.0}]
    assert instance_rows({"v": np.array([1.5, 2.5]), "t": pd.NA, "n": None}) == [{"v": [1.5, 2.5], "t": None, "n": None}]
    for bad in ([], [1, 2], None, 5, [{"a": np.float64("inf")}]):
        with pytest.raises(InvalidInstances):
            instance_rows(bad)
    with pytest.raises(InvalidInstances, match="routing_key"):
        predict("fraud", [{"a": 1}], routing_key=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("body", ['{"instances": []}', '{"instances": [{"a": 1}], "routing_key": 5}', "[1, 2]",
                                  '{"instances": null}', '{"instances": 5}'])
def test_a_predict_body_the_client_cannot_send_is_refused_with_exit_6_or_2(body):
    result = CliRunner().invoke(app, ["--url", "http://127.0.0.1:9", "predict", "fraud", "--json", body])
    assert result.exit_code in (ExitCode.refused, ExitCode.usage), result.output
    assert "Traceback" not in result.output


def rollout_body(state: str) -> dict:
    return {"id": 1, "model": "fraud", "candidate": 2, "baseline": 1, "state": state, "step_index": 0,
            "canary_percent": 10.0, "steps": [10.0, 50.0], "interval_s": 60.0, "min_requests": 5, "checks": {},
            "max_failures": 1, "failures": 0, "require_approval": False, "approved": False, "reason": "",
            "history": [], "created_by": "admin", "created_at": "2026-11-27T00:00:00Z",
            "updated_at": "2026-11-27T00:00:00Z"}


def watching(*answers) -> Fleet:
    replies = iter(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        reply = next(replies)
        if isinstance(reply, Exception):
            raise reply
        return reply

    config = ClientConfig(registry_url="http://registry.test", api_key="mlf_k", retries=0)
    return Fleet(config=config, transport=httpx.MockTransport(handler), backoff=Backoff(base_s=0, cap_s=0))


def test_a_watch_polls_through_a_registry_briefly_out_of_reach():
    unavailable = httpx.Response(503, json={"status": 503, "code": "backend-unavailable", "title": "t", "detail": "d"})
    fleet = watching(httpx.Response(200, json=rollout_body("running")), httpx.ConnectError("refused"), unavailable,
                     httpx.Response(200, json=rollout_body("promoted")))
    states = [r.state.value for r in fleet.watch_rollout("fraud", 1, every_s=0)]
    assert states == ["running", "promoted"]
    gone = watching(httpx.Response(200, json=rollout_body("running")), httpx.ConnectError("refused"))
    with pytest.raises(FleetUnreachable):
        list(gone.watch_rollout("fraud", 1, every_s=0, outage_s=0))


def test_a_change_whose_answer_never_came_may_have_been_applied():
    """A read timeout after a POST was sent is not "try again": the version may be registered, the key made."""
    from mlfleet.client import OutcomeUnknown

    def timing_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    def refusing(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    config = ClientConfig(registry_url="http://registry.test", api_key="mlf_k", retries=0)
    with pytest.raises(OutcomeUnknown, match="may have been applied"):
        Fleet(config=config, transport=httpx.MockTransport(timing_out)).create_key("ci", "viewer")
    with pytest.raises(FleetUnreachable) as not_sent:
        Fleet(config=config, transport=httpx.MockTransport(refusing)).create_key("ci", "viewer")
    assert not isinstance(not_sent.value, OutcomeUnknown), "a refused connection sent nothing"
    with pytest.raises(FleetUnreachable) as read:
        Fleet(config=config, transport=httpx.MockTransport(timing_out)).list_models()
    assert not isinstance(read.value, OutcomeUnknown), "a read changes nothing"
