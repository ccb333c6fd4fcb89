"""Where the fleet is and which key to use: arguments, then environment, then a config file.

Environment: ``MLFLEET_URL`` (the registry, the fleet's control plane; the other services are
assumed on the same host at their default ports), ``MLFLEET_REGISTRY_URL``,
``MLFLEET_GATEWAY_URL``, ``MLFLEET_MONITOR_URL``, ``MLFLEET_FEATURES_URL``,
``MLFLEET_API_KEY`` (or ``MLFLEET_API_KEY_FILE``) and ``MLFLEET_CONFIG`` (the config file;
default ``$XDG_CONFIG_HOME/mlfleet/config.toml``, i.e. ``~/.config/mlfleet/config.toml``),
whose keys are the same names in lower case without the prefix::

    url = "http://fleet.internal:8081"
    api_key_file = "~/.config/mlfleet/key"
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mlfleet.client.errors import FleetError

SERVICES = ("registry", "gateway", "monitor", "features")
DEFAULT_PORTS = {"gateway": 8080, "registry": 8081, "features": 8082, "monitor": 8083}
CONFIG_KEYS = frozenset({"url", "api_key", "api_key_file", "timeout_s", "retries", *(f"{s}_url" for s in SERVICES)})


class ConfigError(FleetError):
    """The configuration file or a setting is unusable."""


@dataclass(frozen=True)
class ClientConfig:
    registry_url: str = f"http://127.0.0.1:{DEFAULT_PORTS['registry']}"
    gateway_url: str = f"http://127.0.0.1:{DEFAULT_PORTS['gateway']}"
    monitor_url: str = f"http://127.0.0.1:{DEFAULT_PORTS['monitor']}"
    features_url: str = f"http://127.0.0.1:{DEFAULT_PORTS['features']}"
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    retries: int = 3
    """Retries of a request answered 503, with exponential backoff."""

    def url(self, service: str) -> str:
        return getattr(self, f"{service}_url")

    @classmethod
    def resolve(cls, *, url: str | None = None, api_key: str | None = None, config_file: Path | None = None,
                env: Mapping[str, str] | None = None, **service_urls: str | None) -> ClientConfig:
        """Settings from arguments (``registry_url=…`` etc.), then ``env``, then the config file.

        Within each layer a service's own URL beats one derived from ``url``.
        """
        env = os.environ if env is None else env
        unknown = set(service_urls) - {f"{s}_url" for s in SERVICES}
        if unknown:
            raise TypeError(f"unknown arguments: {', '.join(sorted(unknown))}")
        layers = [
            {"url": url, "api_key": api_key, **service_urls},
            {key: env.get(f"MLFLEET_{key.upper()}") for key in CONFIG_KEYS},
            read_config_file(config_file or config_path(env)),
        ]
        values: dict[str, object] = {}
        for service in SERVICES:
            chosen = next((_service_url(layer, service) for layer in layers if _service_url(layer, service)), None)
            if chosen:
                values[f"{service}_url"] = with_scheme(chosen).rstrip("/")
        key = next((_api_key(layer) for layer in layers if _api_key(layer)), None)
        if key:
            values["api_key"] = key
        for name, kind, lowest, rule in (("timeout_s", float, 0.0, "a number of seconds above 0"),
                                          ("retries", int, -1, "a whole number, at least 0")):
            raw = next((layer[name] for layer in layers if layer.get(name) not in (None, "")), None)
            if raw is not None:
                try:
                    values[name] = kind(raw)
                except (TypeError, ValueError):
                    raise ConfigError(f"{name} must be {rule}, not {raw!r}") from None
                if not lowest < values[name] < math.inf:  # also refuses nan
                    raise ConfigError(f"{name} must be {rule}, not {raw!r}")
        return cls(**values)


def config_path(env: Mapping[str, str]) -> Path:
    if env.get("MLFLEET_CONFIG"):
        return Path(env["MLFLEET_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "mlfleet" / "config.toml"


def read_config_file(path: Path) -> dict[str, object]:
    """The file's settings (``api_key_file`` relative to the file's folder); a missing file is an empty configuration."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    unknown = set(data) - CONFIG_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown settings {', '.join(sorted(unknown))}; known: {', '.join(sorted(CONFIG_KEYS))}")
    if data.get("api_key_file"):
        data["api_key_file"] = str(path.parent / Path(str(data["api_key_file"])).expanduser())
    return data


def _service_url(layer: Mapping[str, object], service: str) -> str | None:
    own = layer.get(f"{service}_url")
    if own:
        return str(own)
    base = layer.get("url")
    return derive_url(str(base), service) if base else None


def derive_url(url: str, service: str) -> str:
    """``url`` is the registry; another service is on the same host at its default port."""
    parts = urlsplit(with_scheme(url))
    if not parts.hostname:
        raise ConfigError(f"not a URL: {url!r}")
    if service == "registry":
        return with_scheme(url)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return urlunsplit((parts.scheme, f"{host}:{DEFAULT_PORTS[service]}", "", "", ""))


def with_scheme(url: str) -> str:
    return url if "://" in url else f"http://{url}"


def _api_key(layer: Mapping[str, object]) -> str | None:
    if layer.get("api_key"):
        return str(layer["api_key"]).strip()
    if layer.get("api_key_file"):
        path = Path(str(layer["api_key_file"])).expanduser()
        try:
            return path.read_text(encoding="utf-8-sig").strip() or None  # utf-8-sig: a BOM is not part of the key
        except OSError as exc:
            raise ConfigError(f"cannot read the API key file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"the API key file {path} is not UTF-8 text (written as UTF-16, say)") from None
    return None
