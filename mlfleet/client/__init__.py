"""The Python client of the fleet: ``Fleet`` (sync) and ``AsyncFleet`` (async) over its REST API.

    from mlfleet.client import Fleet

    fleet = Fleet()                                   # MLFLEET_URL / config file / local defaults
    version = fleet.register("fraud", estimator, x_train, labels=y_train, holdout=(x_test, y_test))
    fleet.set_traffic("fraud", stable=version.version)
"""

from mlfleet.client.aio import AsyncFleet
from mlfleet.client.config import ClientConfig, ConfigError
from mlfleet.client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    FleetError,
    FleetUnreachable,
    Forbidden,
    GatewayTimeout,
    InvalidInput,
    InvalidInstances,
    ModelNotFound,
    NotConfirmed,
    NotFound,
    OutcomeUnknown,
    PackagingError,
    RateLimited,
    RolloutConflict,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    VersionNotFound,
    VersionRejected,
)
from mlfleet.client.sync import Fleet

__all__ = [
    "ApiError", "AsyncFleet", "BadRequest", "ClientConfig", "ConfigError", "Conflict", "Fleet", "FleetError",
    "FleetUnreachable", "Forbidden", "GatewayTimeout", "InvalidInput", "InvalidInstances", "ModelNotFound",
    "NotConfirmed", "NotFound", "OutcomeUnknown", "PackagingError", "RateLimited", "RolloutConflict", "ServerError",
    "ServiceUnavailable", "Unauthorized", "VersionNotFound", "VersionRejected",
]
