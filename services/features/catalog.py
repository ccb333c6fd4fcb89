"""What the feature store serves, and the checks requests make against it.

Pure logic: a :class:`Catalog` describes the applied feature views; the functions here resolve
``view:field`` references, check entity keys and turn pushed rows into the frame Feast writes.
They raise :class:`~services.common.errors.InvalidInput` naming what is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from services.common.errors import InvalidInput, NotFound
from services.features.definitions import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from services.features.schemas import EPOCH


@dataclass(frozen=True)
class FieldSpec:
    name: str
    dtype: str
    """Feast type name: ``Int64``, ``Float64``, ``String``, ``Bool``…"""


@dataclass(frozen=True)
class ViewSpec:
    name: str
    entities: tuple[str, ...]
    join_keys: tuple[FieldSpec, ...]
    fields: tuple[FieldSpec, ...]
    ttl: timedelta | None
    push_source: str | None
    offline_path: str | None

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)


@dataclass(frozen=True)
class Catalog:
    views: tuple[ViewSpec, ...]

    def view(self, name: str) -> ViewSpec | None:
        return next((v for v in self.views if v.name == name), None)

    def view_for_push(self, push_source: str) -> ViewSpec:
        """The view fed by ``push_source`` (each push source of the repo feeds exactly one)."""
        view = next((v for v in self.views if v.push_source == push_source), None)
        if view is None:
            known = sorted(v.push_source for v in self.views if v.push_source)
            raise NotFound(f"unknown push source {push_source!r}", known=known)
        return view


def resolve_features(catalog: Catalog, refs: Sequence[str]) -> list[ViewSpec]:
    """The views behind ``refs`` (``view:field``); every unknown view or field is named."""
    problems: list[str] = []
    views: dict[str, ViewSpec] = {}
    for ref in refs:
        view_name, sep, field_name = ref.partition(":")
        view = catalog.view(view_name) if sep else None
        if not sep or not field_name:
            problems.append(f"{ref!r} is not 'feature_view:field'")
        elif view is None:
            problems.append(f"unknown feature view {view_name!r} in {ref!r}")
        elif view.field(field_name) is None:
            problems.append(f"feature view {view_name!r} has no field {field_name!r}")
        else:
            views[view.name] = view
    if problems:
        raise InvalidInput("; ".join(problems), problems=problems)
    return list(views.values())


MAX_ONLINE_ROWS = 10_000


def check_entities(views: Iterable[ViewSpec], entities: Mapping[str, Sequence[Any]]) -> int:
    """Check the entity columns the ``views`` need; return the number of rows."""
    views = list(views)
    needed = {key.name: key for view in views for key in view.join_keys}
    problems = [f"missing entity key {name!r}" for name in needed if name not in entities]
    problems += [
        f"entity key {name!r} is not used by the requested features"
        for name in entities
        if name not in needed
    ]
    lengths = {len(values) for values in entities.values()}
    if len(lengths) > 1:
        problems.append("entity key columns must all have the same length")
    elif lengths and not 0 < max(lengths) <= MAX_ONLINE_ROWS:
        problems.append(f"entity key columns need 1 to {MAX_ONLINE_ROWS} values")
    for name, values in entities.items():
        if name in needed:
            problems += [f"entity key {name!r}: {p}" for p in _type_problems(needed[name], values)]
    if problems:
        raise InvalidInput("; ".join(problems), problems=problems)
    return lengths.pop() if lengths else 0


def push_frame(view: ViewSpec, rows: Sequence[Mapping[str, Any]], *, now: datetime) -> pd.DataFrame:
    """Pushed rows as the frame Feast writes: join keys, every field, both timestamps.

    ``event_timestamp`` defaults to ``now``; ``created_timestamp`` is always ``now``.
    """
    columns = {f.name: f for f in (*view.join_keys, *view.fields)}
    problems: list[str] = []
    for index, row in enumerate(rows):
        unknown = sorted(set(row) - set(columns) - {EVENT_TIMESTAMP})
        missing = [name for name in columns if name not in row]
        problems += [
            f"row {index}: unknown field {name!r} for view {view.name!r}" for name in unknown
        ]
        problems += [f"row {index}: missing field {name!r}" for name in missing]
        for name, spec in columns.items():
            if name in row:
                problems += [
                    f"row {index}: field {name!r}: {p}" for p in _type_problems(spec, [row[name]])
                ]
    if problems:
        raise InvalidInput("; ".join(problems), problems=problems)
    frame = pd.DataFrame({name: [row[name] for row in rows] for name in columns})
    frame[EVENT_TIMESTAMP] = _timestamps([row.get(EVENT_TIMESTAMP) for row in rows], now)
    frame[CREATED_TIMESTAMP] = pd.Timestamp(now)
    return frame


def _type_problems(spec: FieldSpec, values: Sequence[Any]) -> list[str]:
    check = _CHECKS.get(spec.dtype)
    if check is None:
        return [f"type {spec.dtype} cannot be pushed here"]
    bad = [v for v in values if not check(v)]
    return [f"expected {spec.dtype}, got {bad[0]!r}"] if bad else []


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


_CHECKS = {
    "Int32": _is_int,
    "Int64": _is_int,
    "Float32": _is_float,
    "Float64": _is_float,
    "String": lambda value: isinstance(value, str),
    "Bool": lambda value: isinstance(value, bool),
}


PUSH_CLOCK_SKEW = timedelta(minutes=5)
"""How far past this service's clock a pushed ``event_timestamp`` may lie (the pusher's clock running ahead)."""


def _timestamps(values: list[Any], now: datetime) -> pd.Series:
    """Each row's ``event_timestamp`` (ISO 8601, UTC without an offset), ``now`` when absent: from 1970 on, and no
    later than :data:`PUSH_CLOCK_SKEW` past ``now``. The online store keeps a key's newest row, so a row dated in the
    future would hide every later push of its key, answered with success, until that date."""
    problems = []
    parsed = []
    latest = pd.Timestamp(now + PUSH_CLOCK_SKEW)
    for index, value in enumerate(values):
        stamp = pd.Timestamp(now) if value is None else _parse_time(value)
        if stamp is None:
            problems.append(f"row {index}: {EVENT_TIMESTAMP} {value!r} is not an ISO 8601 time")
        elif not pd.Timestamp(EPOCH) <= stamp <= latest:
            problems.append(f"row {index}: {EVENT_TIMESTAMP} {value!r} must lie between 1970 and now "
                            f"(at most {PUSH_CLOCK_SKEW.seconds // 60} minutes ahead of {latest - PUSH_CLOCK_SKEW})")
        parsed.append(stamp)
    if problems:
        raise InvalidInput("; ".join(problems), problems=problems)
    return pd.Series(parsed, dtype="datetime64[ns, UTC]")


def _parse_time(value: Any) -> pd.Timestamp | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        return None
    if pd.isna(stamp):
        return None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
