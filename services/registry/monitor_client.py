"""Adapter to the monitor's HTTP API: a model's per-version numbers over a time window.

The registry never imports the monitor: it reads ``GET /v1/models/{model}/metrics?start=&end=``
and keeps only the fields a verdict needs. ``quality`` (accuracy on labelled feedback) is
optional: a monitor that does not report it means "no accuracy check".
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from services.common.errors import BackendUnavailable
from services.registry.verdict import VersionNumbers

logger = logging.getLogger("mlfleet.registry.monitor")


class _Latency(BaseModel):
    model_config = ConfigDict(extra="ignore")

    p50: float
    p95: float
    p99: float
    mean: float


class _Histogram(BaseModel):
    model_config = ConfigDict(extra="ignore")

    edges: list[float]
    counts: list[int]


class _VersionMetrics(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: int | None
    requests: int
    errors: int
    latency_ms: _Latency | None = None
    latency_histogram: _Histogram | None = None
    quality: dict[str, Any] | None = None


class _ModelMetrics(BaseModel):
    model_config = ConfigDict(extra="ignore")

    versions: list[_VersionMetrics]


def version_numbers(metrics: _VersionMetrics) -> VersionNumbers:
    latency, histogram = metrics.latency_ms, metrics.latency_histogram
    accuracy = (metrics.quality or {}).get("accuracy")
    labelled = (metrics.quality or {}).get("labelled")
    return VersionNumbers(
        requests=metrics.requests, errors=metrics.errors,
        p50_ms=latency.p50 if latency else None, p95_ms=latency.p95 if latency else None,
        p99_ms=latency.p99 if latency else None, mean_ms=latency.mean if latency else None,
        latency_edges=tuple(histogram.edges) if histogram else (),
        latency_counts=tuple(histogram.counts) if histogram else (),
        accuracy=float(accuracy) if isinstance(accuracy, int | float) else None,
        labelled=labelled if isinstance(labelled, int) and not isinstance(labelled, bool) and labelled > 0 else None,
    )


class MonitorClient:
    def __init__(self, url: str, *, timeout_s: float) -> None:
        self.url = url
        self._http = httpx.AsyncClient(base_url=url, timeout=timeout_s)

    async def window(self, model: str, *, start: float, end: float) -> dict[int, VersionNumbers]:
        """Version → numbers of ``model`` over ``[start, end)`` (unix seconds); empty when the monitor saw no event.

        Raises :class:`BackendUnavailable` when the monitor cannot be asked or answers nonsense.
        """
        try:
            response = await self._http.get(f"/v1/models/{model}/metrics", params={"start": start, "end": end})
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"the monitor at {self.url} is not reachable: {type(exc).__name__}"
                                     + (f": {exc}" if str(exc) else "")) from None
        if response.status_code == 404:
            return {}
        if response.status_code != 200:
            raise BackendUnavailable(f"the monitor answered {response.status_code} for {model!r}")
        try:
            body = _ModelMetrics.model_validate_json(response.content)
        except ValidationError as exc:
            logger.warning("unexpected metrics from the monitor for %s: %s", model, exc)
            raise BackendUnavailable("the monitor's metrics could not be read") from None
        return {m.version: version_numbers(m) for m in body.versions if m.version is not None}

    async def close(self) -> None:
        await self._http.aclose()
