"""Instances and online features → the FP32 input tensor, in signature order.

Pure functions: the feature lookup itself happens in :mod:`services.gateway.features`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from services.common.errors import InvalidInput, MissingFeatures
from services.common.schemas import InputSource, Signature, SignatureInput

FeatureColumns = Mapping[str, Sequence[Any]]
"""Online feature values by ``view:field``, one value per instance."""


def entity_rows(signature: Signature, instances: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The join keys of each instance, as Feast expects them."""
    rows = []
    for index, instance in enumerate(instances):
        row = {}
        for entity in signature.entities:
            value = instance.get(entity)
            if value is None:
                raise InvalidInput(f"instance {index} lacks entity key {entity!r}", field=entity, instance_index=index)
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise InvalidInput(f"instance {index}: entity key {entity!r} must be an integer or a string",
                                   field=entity, instance_index=index)
            row[entity] = value
        rows.append(row)
    return rows


FLOAT32_MAX = float(np.finfo(np.float32).max)


def build_tensor(signature: Signature, instances: Sequence[Mapping[str, Any]], features: FeatureColumns) -> np.ndarray:
    """A ``[len(instances), len(signature.inputs)]`` FP32 array.

    Request inputs are read from the instance, feast inputs from ``features``; a missing
    value takes the input's ``default`` when it declares one, else the request fails:
    422 ``invalid-input`` for a request field, 422 ``missing-features`` for features
    (naming every missing feature and the entity it was looked up for).
    """
    columns = [[instance.get(spec.name) for instance in instances] if spec.source is InputSource.request
               else features[spec.feature] for spec in signature.inputs]
    matrix = numeric_matrix(columns)
    if matrix is not None:
        return np.ascontiguousarray(matrix.T, dtype=np.float32)
    tensor = np.empty((len(instances), len(signature.inputs)), dtype=np.float32)
    checked_one_by_one = []
    for column, (spec, values) in enumerate(zip(signature.inputs, columns)):
        array = numeric_matrix([values])
        if array is None:
            checked_one_by_one.append((column, spec))
        else:
            tensor[:, column] = array[0]
    if checked_one_by_one:
        _fill_value_by_value(tensor, signature, instances, features, checked_one_by_one)
    return tensor


def numeric_matrix(columns: Sequence[Sequence[Any]]) -> np.ndarray | None:
    """``columns`` (of equal length) as one float64 array, checked in one pass, when every value is an ``int`` or
    ``float`` that FP32 holds (the common case); ``None`` when any needs a closer look (absent, a default, not a
    number, not finite, beyond FP32's range). One call for a whole micro-batch costs about what one column used to."""
    if not all(type(value) is float or type(value) is int for values in columns for value in values):
        return None
    try:
        array = np.array(columns, dtype=np.float64)
    except OverflowError:
        return None
    # one pass for both checks: a NaN makes the max NaN and an infinity exceeds FP32's, so either fails it
    return array if np.abs(array).max(initial=0.0) <= FLOAT32_MAX else None


def _fill_value_by_value(tensor: np.ndarray, signature: Signature, instances: Sequence[Mapping[str, Any]],
                         features: FeatureColumns, columns: list[tuple[int, SignatureInput]]) -> None:
    """Fill ``columns`` one value at a time, applying defaults and raising the request's first error."""
    missing = []
    for row, instance in enumerate(instances):
        absent = []
        for column, spec in columns:
            if spec.source is InputSource.request:
                value = instance.get(spec.name)
                if value is None and spec.default is None:
                    why = "is null" if spec.name in instance else "is missing"
                    raise InvalidInput(f"instance {row}: field {spec.name!r} {why} (the model needs a number, and the "
                                       "signature gives it no default)", field=spec.name, instance_index=row)
            else:
                value = features[spec.feature][row]
                if value is None and spec.default is None:
                    absent.append(spec.feature)
                    continue
            tensor[row, column] = spec.default if value is None else _number(value, spec.name, row)
        if absent:
            entity = {name: instance.get(name) for name in signature.entities}
            missing.append({"instance": row, "entity": entity, "features": absent})
    if missing:
        raise MissingFeatures(_describe_missing(missing), missing=missing)


def _number(value: Any, name: str, row: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"instance {row}: {name!r} must be a number, got {type(value).__name__}", field=name, instance_index=row)
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not math.isfinite(number):
        raise InvalidInput(f"instance {row}: {name!r} must be finite, got {value!r:.40}", field=name,
                           instance_index=row)
    if abs(number) > FLOAT32_MAX:  # a feature value too: stored, it would reach the model as infinity
        raise InvalidInput(f"instance {row}: {name!r} is {number:.6g}, beyond the model's FP32 inputs",
                           field=name, instance_index=row)
    return number


def _describe_missing(missing: list[dict[str, Any]]) -> str:
    first = missing[0]
    keys = ", ".join(f"{k}={v!r}" for k, v in first["entity"].items())
    more = f" (and {len(missing) - 1} more instances)" if len(missing) > 1 else ""
    return f"no value for {', '.join(first['features'])} for {keys}{more}"
