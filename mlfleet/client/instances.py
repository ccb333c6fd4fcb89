"""Predict instances as the client sends them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mlfleet.client.errors import InvalidInstances


def instance_rows(instances: Any) -> list[dict[str, Any]]:
    """Predict instances as JSON-ready rows: one mapping, several, or a pandas DataFrame (a row each), numpy scalars
    as Python values. A number that is not finite is refused (JSON has none; sent as ``null`` it would read as a
    missing value)."""
    if hasattr(instances, "to_dict") and hasattr(instances, "columns"):
        instances = instances.to_dict(orient="records")
    rows = [instances] if isinstance(instances, Mapping) else list(instances)
    if not rows or not all(isinstance(row, Mapping) for row in rows):
        raise InvalidInstances("instances are one mapping, a non-empty list of mappings, or a DataFrame")
    plain = [{str(key): value.item() if hasattr(value, "item") and hasattr(value, "dtype") else value
              for key, value in row.items()} for row in rows]
    for index, row in enumerate(plain):
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidInstances(f"instance {index}: {key} is {value}, not a finite number")
    return plain
