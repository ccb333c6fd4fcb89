"""The Feast repo configuration shared by the features service (writer) and gateways (readers).

Both open a ``FeatureStore`` on the same file registry and the same Redis online store;
neither imports the other.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from feast import FeatureStore
from feast.repo_config import RepoConfig

FEAST_PROJECT = "mlfleet"


def feast_redis_connection_string(redis_url: str) -> str:
    """Translate ``redis://[:password@]host:port/db`` into Feast's ``host:port,db=N[,password=…]``."""
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
    return ",".join(parts)


def feast_repo_config(*, redis_url: str, feast_dir: Path, registry_cache_ttl_s: int = 5) -> RepoConfig:
    """Feast config: file registry under ``feast_dir``, Redis online store, file offline store."""
    feast_dir = Path(feast_dir).resolve()
    feast_dir.mkdir(parents=True, exist_ok=True)
    return RepoConfig(
        project=FEAST_PROJECT,
        provider="local",
        repo_path=feast_dir,
        registry={
            "registry_type": "file",
            "path": str(feast_dir / "registry.db"),
            "cache_ttl_seconds": registry_cache_ttl_s,
        },
        online_store={"type": "redis", "connection_string": feast_redis_connection_string(redis_url)},
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
    )


def open_feature_store(*, redis_url: str, feast_dir: Path, registry_cache_ttl_s: int = 5) -> FeatureStore:
    return FeatureStore(config=feast_repo_config(redis_url=redis_url, feast_dir=feast_dir, registry_cache_ttl_s=registry_cache_ttl_s))
