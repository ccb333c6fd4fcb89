"""Dependencies of the features API, read from the app's resource container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import Depends, Request

from services.common.errors import BackendUnavailable
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
    catalog: Catalog | None = None
    """What the registry holds once the definitions are applied; None before."""


def get_resources(request: Request) -> FeaturesResources:
    return request.app.state.resources


def get_catalog(resources: Annotated[FeaturesResources, Depends(get_resources)]) -> Catalog:
    if resources.catalog is None:
        raise BackendUnavailable("feature definitions are not applied yet")
    return resources.catalog


ResourcesDep = Annotated[FeaturesResources, Depends(get_resources)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
