"""The Feast repo configuration shared by the features service (writer) and gateways (readers).

Both open a ``FeatureStore`` on the same Feast registry and the same Redis online store;
neither imports the other. The registry is a file under ``feast_dir`` by default (one
machine: ``mlfleet up``), or Feast's SQL registry when ``registry_url`` (a SQLAlchemy URL,
e.g. the fleet's PostgreSQL) is given — what separate pods, each with its own disk, need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from feast import FeatureStore
from feast.repo_config import RepoConfig

FEAST_PROJECT = "mlfleet"

RegistryCacheMode = Literal["sync", "thread"]
"""Feast's registry ``cache_mode``. ``sync`` (Feast's default) refreshes an expired cache inside the read that finds it
expired and, for a file registry, checks the file's mtime on every read. ``thread`` never refreshes inside a read:
with ``cache_ttl_seconds`` 0 (never expires) the reader refreshes it itself with ``FeatureStore.refresh_registry`` —
what the gateway does, off its event loop."""


def feast_redis_connection_string(redis_url: str) -> str:
    """Translate ``redis://[:password@]host:port/db`` into Feast's ``host:port,db=N[,password=…],retry=null``.

    Feast passes every ``key=value`` (JSON-decoded) to its redis-py client. ``retry=null`` turns off redis-py's
    default retry (3 attempts, exponential backoff from 1 s): with it, a refused connection (Redis down or
    restarting) kept a lookup reconnecting for seconds, past the gateway's feature deadline, so callers saw a
    timeout instead of "Redis is down". Without it a refused connection fails at once (``ConnectionError``); a
    slow Redis still runs into the caller's deadline. A pooled connection the server closed is still replaced
    when it is taken from the pool, so a restarted Redis is reconnected to without a retry.
    """
    parsed = urlparse(redis_url)
    if parsed.scheme not in {"redis", "rediss"}:
        raise ValueError(f"unsupported Redis URL scheme: {parsed.scheme!r}")
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 6379
    db = (parsed.path or "/0").lstrip("/") or "0"
    parts = [f"{host}:{port}", f"db={int(db)}"]
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    parts.append("retry=null")
    return ",".join(parts)


def feast_registry_config(*, feast_dir: Path, registry_url: str | None, cache_ttl_s: int,
                          cache_mode: RegistryCacheMode = "sync") -> dict[str, Any]:
    """Feast's ``registry`` section: SQL at ``registry_url`` when given, else the file ``<feast_dir>/registry.db``."""
    if registry_url:
        return {"registry_type": "sql", "path": registry_url, "cache_ttl_seconds": cache_ttl_s, "cache_mode": cache_mode,
                "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True}}
    return {"registry_type": "file", "path": str(feast_dir / "registry.db"), "cache_ttl_seconds": cache_ttl_s,
            "cache_mode": cache_mode}


def feast_repo_config(*, redis_url: str, feast_dir: Path, registry_url: str | None = None,
                      registry_cache_ttl_s: int = 5, registry_cache_mode: RegistryCacheMode = "sync") -> RepoConfig:
    """Feast config: file or SQL registry, Redis online store, file offline store (under ``feast_dir``)."""
    feast_dir = Path(feast_dir).resolve()
    feast_dir.mkdir(parents=True, exist_ok=True)
    return RepoConfig(
        project=FEAST_PROJECT,
        provider="local",
        repo_path=feast_dir,
        registry=feast_registry_config(feast_dir=feast_dir, registry_url=registry_url, cache_ttl_s=registry_cache_ttl_s,
                                       cache_mode=registry_cache_mode),
        online_store={"type": "redis", "connection_string": feast_redis_connection_string(redis_url)},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
    )


def open_feature_store(*, redis_url: str, feast_dir: Path, registry_url: str | None = None,
                       registry_cache_ttl_s: int = 5, registry_cache_mode: RegistryCacheMode = "sync") -> FeatureStore:
    return FeatureStore(config=feast_repo_config(redis_url=redis_url, feast_dir=feast_dir, registry_url=registry_url,
                                                 registry_cache_ttl_s=registry_cache_ttl_s,
                                                 registry_cache_mode=registry_cache_mode))
