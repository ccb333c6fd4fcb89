"""Dependency aliases reading the lifespan's resources from ``app.state``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from services.common.auth import Identity, Role
from services.common.remote_auth import remote_caller
from services.monitor.alerts import AlertCenter
from services.monitor.consumer import EventConsumer
from services.monitor.feedback import FeedbackStore
from services.monitor.registry_client import RegistryClient
from services.monitor.reports import DriftReporter
from services.monitor.settings import MonitorSettings
from services.monitor.store import AggregateStore
from services.monitor.telemetry import MonitorMetrics

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


def get_feedback(request: Request) -> FeedbackStore:
    return get_resources(request).feedback


def get_reporter(request: Request) -> DriftReporter:
    return get_resources(request).reporter


def get_alerts(request: Request) -> AlertCenter:
    return get_resources(request).alerts


def get_registry(request: Request) -> RegistryClient:
    return get_resources(request).registry


def get_metrics(request: Request) -> MonitorMetrics:
    return request.app.state.metrics


FEEDBACK_ROLE = Role.deployer
"""Labelling predictions is an ML engineer's action; the read APIs and the dashboard stay open."""
get_feedback_caller = remote_caller(FEEDBACK_ROLE, lambda request: get_resources(request).feedback_auth)


SettingsDep = Annotated[MonitorSettings, Depends(get_settings)]
StoreDep = Annotated[AggregateStore, Depends(get_store)]
ConsumerDep = Annotated[EventConsumer, Depends(get_consumer)]
FeedbackDep = Annotated[FeedbackStore, Depends(get_feedback)]
ReporterDep = Annotated[DriftReporter, Depends(get_reporter)]
AlertsDep = Annotated[AlertCenter, Depends(get_alerts)]
RegistryDep = Annotated[RegistryClient, Depends(get_registry)]
MetricsDep = Annotated[MonitorMetrics, Depends(get_metrics)]
FeedbackCallerDep = Annotated[Identity, Depends(get_feedback_caller)]
