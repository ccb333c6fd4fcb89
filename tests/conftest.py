"""Session fixtures that start real services on free ports: Redis, Triton, PostgreSQL, fleet processes.

Build on each other: settings → real service → app → client. Nothing here is a fake.
"""

from __future__ import annotations

import services  # noqa: F401  (first: keeps prometheus_client out of Feast's multiprocess mode)

import os
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings

from mlfleet.runtime.processes import (
    ask_to_stop,
    free_port,
    http_ok,
    start_process,
    stop_process,
    stop_processes,
    wait_serving,
    wait_stopped,
    wait_until,
)
from mlfleet.runtime.redis_server import redis_answers, start_redis
from mlfleet.runtime.services import env_name, service_argv
from mlfleet.runtime.triton import TritonLaunch, TritonRuntime
from services.common.auth import generate_key

# CI explores the same examples every run (a red CI must be reproducible); locally, new ones.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

ROOT = Path(__file__).resolve().parents[1]

_stopping: list[subprocess.Popen] = []
_stopping_last: list[subprocess.Popen] = []


def stop_at_session_end(processes: Iterable[subprocess.Popen | None], *, shared: bool = False) -> None:
    """For a session fixture's teardown: ask its processes to stop now, and wait for them once every session
    fixture has done the same (:func:`pytest_sessionfinish`). pytest tears session fixtures down one after another,
    and waiting for each fleet, Triton and Redis in turn took ~13 s at the end of a run on a slow host; their
    shutdowns now overlap. ``shared``: a server the others use (Redis, the shared Triton), asked to stop only once
    they have stopped, so that none of them loses it while it shuts down. (Module fixtures stop theirs at once: the
    next module may need the machine.)"""
    started = [process for process in processes if process is not None]
    if shared:
        _stopping_last.extend(started)
        return
    ask_to_stop(started)
    _stopping.extend(started)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Last, after pytest's own ``sessionfinish``, which tears session fixtures down when a run stopped early."""
    wait_stopped(_stopping)
    stop_processes(_stopping_last)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlfleet")


@pytest.fixture(scope="session")
def admin_key() -> str:
    """The bootstrap admin API key of every registry the suite starts (random per session)."""
    return generate_key()


def write_key_file(path: Path, key: str) -> Path:
    """``key`` in a mode-0600 secret file, as ``MLFLEET_REGISTRY_BOOTSTRAP_ADMIN_KEY_FILE`` reads it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def redis_url(workdir) -> Iterator[str]:
    """A Redis of the suite's own, one per worker (``MLFLEET_TEST_REDIS_URL`` to use an external one: then run the
    suite in one process, as ``make test`` does by default, or both workers would share its databases).

    Fixtures that keep state between tests take a database each, so that no other test's writes reach them in
    whatever order a worker runs its files: 0 the gateway and tracing fleets (the same feature values), the
    registries of the registry's, features and monitor tests and the scipy-import test (no shared keys), 5 the
    monitor's tests, 6 the features service's, 7 the tracing fleet's features service, 8 the rollout fleet, 9 the
    reliability fleet, 10 the client fleet, 11 Feast's SQL registry test, 12 the hostile-callers fleet, 13 the
    test of ``mlfleet up`` on a Redis in use, 14 the monitor's read-only tests."""
    external = os.environ.get("MLFLEET_TEST_REDIS_URL")
    if external:
        assert redis_answers(external), f"MLFLEET_TEST_REDIS_URL={external} does not answer"
        yield external
        return
    port = free_port()
    process = start_redis(port, workdir / "redis")
    yield f"redis://127.0.0.1:{port}/0"
    stop_at_session_end([process], shared=True)


@dataclass
class TritonServer:
    http_port: int
    grpc_port: int
    metrics_port: int
    process: subprocess.Popen
    log_file: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def start_triton(workdir: Path) -> TritonServer:
    launch = TritonLaunch(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), workdir=workdir)
    log_file = workdir / "triton.log"
    process = launch.start(TritonRuntime(), log_file=log_file)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{launch.http_port}/v2/health/live"), timeout_s=60,
               what="triton", process=process, log_file=log_file)
    return TritonServer(launch.http_port, launch.grpc_port, launch.metrics_port, process, log_file)


@pytest.fixture(scope="session")
def triton(workdir) -> Iterator[TritonServer]:
    """A real Triton server (CPU, Python backend) in explicit model-control mode."""
    server = start_triton(workdir / "triton")
    yield server
    stop_at_session_end([server.process], shared=True)


def _postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_admin_url(workdir) -> Iterator[str]:
    """A PostgreSQL server: ``MLFLEET_TEST_POSTGRES_URL``, else the machine's on 127.0.0.1:5432,
    else one started from the ``pgserver`` wheel for this session."""
    configured = os.environ.get("MLFLEET_TEST_POSTGRES_URL")
    if configured:
        assert _postgres_answers(configured), f"MLFLEET_TEST_POSTGRES_URL={configured} does not answer"
        yield configured
        return
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if _postgres_answers(local):
        yield local
        return
    import pgserver

    server = pgserver.get_server(workdir / "postgres", cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url) -> Iterator[str]:
    """A fresh database for this session, as a SQLAlchemy ``postgresql+psycopg`` URL."""
    name = f"mlfleet_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(postgres_admin_url)
    info["dbname"] = name
    query = f"?host={info['host']}" if str(info.get("host", "")).startswith("/") else ""
    netloc = info.get("host", "") if not query else ""
    if info.get("port") and not query:
        netloc += f":{info['port']}"
    yield f"postgresql+psycopg://{info.get('user', 'postgres')}@{netloc}/{name}{query}"
    with psycopg.connect(postgres_admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class ServiceProcess:
    name: str
    port: int
    process: subprocess.Popen
    log_file: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.process)


def start_service(name: str, settings: dict[str, str], workdir: Path, *, port: int | None = None,
                  ready_path: str = "/readyz", timeout_s: float = 120) -> ServiceProcess:
    """Run ``services.<name>`` under uvicorn as its own process; ``settings`` are field → value. A service that
    does not get ready in time is stopped before the error is raised, so no process outlives its test."""
    port = port or free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env[env_name(name, "home")] = str(workdir)
    for key, value in settings.items():
        env[env_name(name, key)] = str(value)
    log_file = workdir / f"{name}-{port}.log"
    process = start_process(service_argv(name, host="127.0.0.1", port=port), log_file=log_file, env=env, cwd=ROOT)
    wait_serving(process, f"http://127.0.0.1:{port}{ready_path}", timeout_s=timeout_s, what=name, log_file=log_file)
    return ServiceProcess(name, port, process, log_file, env)


@dataclass(frozen=True)
class ServiceSpec:
    """What :func:`start_service` takes, for :func:`start_services`."""

    name: str
    settings: dict[str, object]
    workdir: Path
    port: int | None = None


def start_services(specs: dict[str, ServiceSpec], *, timeout_s: float = 120) -> dict[str, ServiceProcess]:
    """Start the services of ``specs`` at once and wait for all (their imports overlap on the machine's cores); the
    same keys map to the started services. If one does not start, those that did are stopped before its error is
    raised."""
    with ThreadPoolExecutor(len(specs)) as pool:
        starting = {key: pool.submit(start_service, spec.name, spec.settings, spec.workdir, port=spec.port,
                                     timeout_s=timeout_s) for key, spec in specs.items()}
    started = {key: future.result() for key, future in starting.items() if future.exception() is None}
    failed = [future.exception() for future in starting.values() if future.exception() is not None]
    if failed:
        stop_services(started.values())
        raise failed[0]
    return started


def stop_services(started: Iterable[ServiceProcess | None]) -> None:
    """Stop the services (``None`` stands for one never started) at once: their shutdowns overlap."""
    stop_processes([service.process for service in started if service is not None])
