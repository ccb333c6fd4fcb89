"""Dependencies of the features API, read from the app's resource container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from services.common.auth import Identity, Role
from services.common.errors import BackendUnavailable
from services.common.remote_auth import RemoteAuthorizer, remote_caller
from services.features.catalog import Catalog
from services.features.metrics import FeatureMetrics
from services.features.settings import FeaturesSettings
from services.features.store import FeastStore


@dataclass
class FeaturesResources:
    """Everything the lifespan opens; kept on ``app.state.resources``."""

    settings: FeaturesSettings
    store: FeastStore
    redis: aioredis.Redis
    metrics: FeatureMetrics
    writers: RemoteAuthorizer
    """Checks the keys of callers that write the online store (push, materialize)."""
    catalog: Catalog | None = None
    """What the registry holds once the definitions are applied; None before."""


def get_resources(request: Request) -> FeaturesResources:
    return request.app.state.resources


def get_catalog(resources: Annotated[FeaturesResources, Depends(get_resources)]) -> Catalog:
    if resources.catalog is None:
        raise BackendUnavailable("feature definitions are not applied yet")
    return resources.catalog


WRITER_ROLE = Role.deployer
"""Writing the online store changes what every model scores on: the role that changes production."""
get_writer = remote_caller(WRITER_ROLE, lambda request: get_resources(request).writers)


ResourcesDep = Annotated[FeaturesResources, Depends(get_resources)]
WriterDep = Annotated[Identity, Depends(get_writer)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
