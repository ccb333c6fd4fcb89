"""How each fleet service is run as a process (shared by ``mlfleet up`` and the tests)."""

from __future__ import annotations

import sys

SERVICES = ("registry", "features", "monitor", "gateway")
DEFAULT_PORTS = {"gateway": 8080, "registry": 8081, "features": 8082, "monitor": 8083}
GATEWAY_HTTP_PROTOCOL = "services.gateway.http_protocol:CoalescingHttpToolsProtocol"
"""uvicorn's httptools protocol writing each answer in one system call (see that module)."""


def service_argv(name: str, *, host: str, port: int) -> list[str]:
    """``uvicorn --factory services.<name>.app:create_app`` on ``host:port``, one worker, without uvicorn's
    ``server`` header (no banner naming the software; one header fewer per answer), the gateway with its coalescing
    HTTP protocol (``--http``)."""
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}")
    protocol = ["--http", GATEWAY_HTTP_PROTOCOL] if name == "gateway" else []
    return [
        sys.executable, "-m", "uvicorn", "--factory", f"services.{name}.app:create_app",
        "--host", host, "--port", str(port), "--no-access-log", "--no-server-header", "--timeout-graceful-shutdown", "5",
        *protocol,
    ]


def env_name(service: str, field: str) -> str:
    """The environment variable that sets ``field`` of ``service``'s settings."""
    return f"MLFLEET_{service.upper()}_{field.upper()}"
