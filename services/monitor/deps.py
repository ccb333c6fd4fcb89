"""Dependency aliases reading the lifespan's resources from ``app.state``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from services.monitor.consumer import EventConsumer
from services.monitor.settings import MonitorSettings
from services.monitor.store import AggregateStore

if TYPE_CHECKING:
    from services.monitor.app import MonitorResources


def get_resources(request: Request) -> MonitorResources:
    return request.app.state.resources


def get_settings(request: Request) -> MonitorSettings:
    return request.app.state.settings


def get_store(request: Request) -> AggregateStore:
    return get_resources(request).store


def get_consumer(request: Request) -> EventConsumer:
    return get_resources(request).consumer


SettingsDep = Annotated[MonitorSettings, Depends(get_settings)]
StoreDep = Annotated[AggregateStore, Depends(get_store)]
ConsumerDep = Annotated[EventConsumer, Depends(get_consumer)]
