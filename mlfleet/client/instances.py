"""Predict instances as the client sends them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from mlfleet.client.errors import InvalidInstances


def instance_rows(instances: Any) -> list[dict[str, Any]]:
    """Predict instances as JSON-ready rows: one mapping, several (pandas Series rows too), or a pandas DataFrame (a
    row each). numpy values become Python ones; a missing value (NaN, ``pd.NA``, ``NaT``) is sent as ``null``, for
    which the gateway applies the input's default; an infinite number is refused (JSON has none)."""
    if hasattr(instances, "to_dict") and hasattr(instances, "columns"):
        instances = instances.to_dict(orient="records")
    if isinstance(instances, Mapping) or not isinstance(instances, Iterable) or isinstance(instances, str | bytes):
        instances = [instances]
    rows = [dict(row.items()) if hasattr(row, "items") and not isinstance(row, str | bytes) else row
            for row in instances]
    if not rows or not all(isinstance(row, Mapping) for row in rows):
        raise InvalidInstances("instances are one mapping, a non-empty list of mappings, or a DataFrame")
    return [{str(key): plain_value(value, index, str(key)) for key, value in row.items()}
            for index, row in enumerate(rows)]


def plain_value(value: Any, index: int, key: str) -> Any:
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # numpy scalars and arrays
        value = str(value) if str(value.dtype).startswith("datetime64") and value.ndim == 0 else value.tolist()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise InvalidInstances(f"instance {index}: {key} is {value}, not a finite number")
        return value
    if _missing(value):
        return None
    return value


def _missing(value: Any) -> bool:
    """pandas' missing-value markers (``pd.NA``, ``NaT``), without importing pandas."""
    return type(value).__name__ in ("NAType", "NaTType")
