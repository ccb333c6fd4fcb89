"""Registry fixtures: settings per database backend → the app with its lifespan → an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from services.registry.database import Database
from services.registry.settings import RegistrySettings
from tests.registry.factories import TrainedModel, train_classifier
from tests.registry.harness import running_registry


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """The registry's database on ``database_url``, migrated."""
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def registry_settings(database_url: str, tmp_path: Path, triton, redis_url: str, admin_key: str) -> RegistrySettings:
    return RegistrySettings(home=tmp_path, database_url=database_url, triton_grpc_url=triton.grpc_url, redis_url=redis_url,
                            artifacts_dir=tmp_path / "artifacts", bootstrap_admin_key=SecretStr(admin_key))


@pytest.fixture
def sqlite_settings(tmp_path: Path, triton, redis_url: str, admin_key: str) -> RegistrySettings:
    return RegistrySettings(home=tmp_path, triton_grpc_url=triton.grpc_url, redis_url=redis_url,
                            bootstrap_admin_key=SecretStr(admin_key))


@pytest.fixture
async def client(registry_settings: RegistrySettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_registry(registry_settings) as client:
        yield client


@pytest.fixture(scope="session")
def trained() -> TrainedModel:
    return train_classifier(seed=0)


@pytest.fixture(scope="session")
def trained_v2() -> TrainedModel:
    return train_classifier(seed=1)
