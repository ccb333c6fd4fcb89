"""Every API operation the client knows, described once: service, method, path, body, answer type.

:class:`~mlfleet.client.sync.Fleet` and :class:`~mlfleet.client.aio.AsyncFleet` only differ
in how they send a :class:`Call`; what to send and how to read the answer lives here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from mlfleet.client import models as m
from mlfleet.client.errors import InvalidInstances

T = TypeVar("T")

LONG_TIMEOUT_S = 180.0
"""Calls that load models into Triton or convert a whole upload get this much time at least."""


IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class Call(Generic[T]):
    service: str
    method: str
    path: str
    answer: type[T] | None
    """Pydantic model of a 2xx body; ``None`` when the answer has no body."""
    params: dict[str, Any] = field(default_factory=dict)
    """Query parameters; those set to ``None`` are left out."""
    json: Any = None
    files: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    idempotent: bool | None = None
    """Whether sending it twice does what sending it once does; ``None``: as its HTTP method says (a ``POST`` does
    not, so it is sent again only on a service's own 503, answered before acting)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", {k: v for k, v in self.params.items() if v is not None})

    @property
    def is_idempotent(self) -> bool:
        return self.method.upper() in IDEMPOTENT_METHODS if self.idempotent is None else self.idempotent

    def read(self, body: bytes) -> T:
        if self.answer is None:
            return None  # type: ignore[return-value]
        return self.answer.model_validate_json(body)  # type: ignore[attr-defined]


def _seg(value: object) -> str:
    return quote(str(value), safe="")


def _body(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


# --- registry -----------------------------------------------------------------------------------

def whoami() -> Call[m.Identity]:
    return Call("registry", "GET", "/v1/auth/whoami", m.Identity)


def create_key(name: str, role: m.Role | str, *, rate_limit_per_minute: int | None = None) -> Call[m.KeyCreated]:
    body = m.KeyCreate(name=name, role=role, rate_limit_per_minute=rate_limit_per_minute)
    return Call("registry", "POST", "/v1/keys", m.KeyCreated, json=_body(body))


def list_keys() -> Call[m.KeyList]:
    return Call("registry", "GET", "/v1/keys", m.KeyList)


def revoke_key(key_id: int) -> Call[m.KeyPublic]:
    return Call("registry", "DELETE", f"/v1/keys/{int(key_id)}", m.KeyPublic)


def list_models() -> Call[m.ModelList]:
    return Call("registry", "GET", "/v1/models", m.ModelList)


def get_model(model: str) -> Call[m.ModelPublic]:
    return Call("registry", "GET", f"/v1/models/{_seg(model)}", m.ModelPublic)


def create_model(model: str, *, description: str = "", gates: m.Gates | dict | None = None) -> Call[m.ModelPublic]:
    body = m.ModelCreate(name=model, description=description, gates=m.Gates.model_validate(gates or {}))
    return Call("registry", "POST", "/v1/models", m.ModelPublic, json=body.model_dump(mode="json"))


def update_model(model: str, *, description: str | None = None,
                 gates: m.Gates | Mapping[str, Any] | None = None) -> Call[m.ModelPublic]:
    """Only what is given is sent: a gate left out keeps its value on the server (merged under the model's lock)."""
    body: dict[str, Any] = {}
    if description is not None:
        body["description"] = description
    if gates is not None:
        body["gates"] = m.Gates.model_validate(gates).model_dump(mode="json", exclude_unset=True)
    return Call("registry", "PATCH", f"/v1/models/{_seg(model)}", m.ModelPublic, json=body)


def list_versions(model: str) -> Call[m.VersionList]:
    return Call("registry", "GET", f"/v1/models/{_seg(model)}/versions", m.VersionList)


def get_version(model: str, version: int) -> Call[m.VersionPublic]:
    return Call("registry", "GET", f"/v1/models/{_seg(model)}/versions/{int(version)}", m.VersionPublic)


def register_version(model: str, artifact: bytes, metadata: m.VersionCreate) -> Call[m.VersionPublic]:
    """Upload an ONNX file with its metadata (multipart parts ``artifact`` and ``metadata``)."""
    return Call("registry", "POST", f"/v1/models/{_seg(model)}/versions", m.VersionPublic,
                files={"artifact": ("model.onnx", artifact, "application/octet-stream")},
                data={"metadata": json.dumps(metadata.model_dump(mode="json", exclude_none=True))}, timeout_s=LONG_TIMEOUT_S)


def get_traffic(model: str) -> Call[m.TrafficPublic]:
    return Call("registry", "GET", f"/v1/models/{_seg(model)}/traffic", m.TrafficPublic)


def set_traffic(model: str, update: m.TrafficUpdate, *, allow_failed: bool = False) -> Call[m.TrafficPublic]:
    return Call("registry", "PUT", f"/v1/models/{_seg(model)}/traffic", m.TrafficPublic,
                params={"allow_failed": "true"} if allow_failed else {}, json=update.model_dump(mode="json"),
                timeout_s=LONG_TIMEOUT_S)


def start_rollout(model: str, rollout: m.RolloutCreate, *, allow_failed: bool = False) -> Call[m.RolloutPublic]:
    """Only the fields the caller set are sent, so the registry's defaults apply to the rest."""
    body = rollout.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    return Call("registry", "POST", f"/v1/models/{_seg(model)}/rollouts", m.RolloutPublic,
                params={"allow_failed": "true"} if allow_failed else {}, json=body, timeout_s=LONG_TIMEOUT_S)


def list_rollouts(model: str, *, state: str | None = None, limit: int = 100) -> Call[m.RolloutList]:
    return Call("registry", "GET", f"/v1/models/{_seg(model)}/rollouts", m.RolloutList,
                params={"limit": limit, "state": state})


def get_rollout(model: str, rollout_id: int) -> Call[m.RolloutPublic]:
    return Call("registry", "GET", f"/v1/models/{_seg(model)}/rollouts/{int(rollout_id)}", m.RolloutPublic)


ROLLOUT_ACTIONS = ("pause", "resume", "approve", "promote", "abort")


def rollout_action(model: str, rollout_id: int, action: str, *, reason: str | None = None) -> Call[m.RolloutPublic]:
    """``reason`` goes to the audit log."""
    if action not in ROLLOUT_ACTIONS:
        raise ValueError(f"unknown rollout action {action!r}; one of {', '.join(ROLLOUT_ACTIONS)}")
    return Call("registry", "POST", f"/v1/models/{_seg(model)}/rollouts/{int(rollout_id)}/{action}", m.RolloutPublic,
                json={"reason": reason} if reason else None, timeout_s=LONG_TIMEOUT_S)


def rollback(model: str, *, reason: str | None = None) -> Call[m.TrafficPublic]:
    return Call("registry", "POST", f"/v1/models/{_seg(model)}/rollback", m.TrafficPublic,
                json={"reason": reason} if reason else None, timeout_s=LONG_TIMEOUT_S)


def audit(*, model: str | None = None, actor: str | None = None, action: str | None = None,
          before_id: int | None = None, limit: int = 100) -> Call[m.AuditList]:
    return Call("registry", "GET", "/v1/audit", m.AuditList,
                params={"limit": limit, "model": model, "actor": actor, "action": action, "before_id": before_id})


# --- gateway ------------------------------------------------------------------------------------

def predict(model: str, instances: list[dict[str, Any]], *, routing_key: str | None = None,
            version: int | None = None) -> Call[m.PredictResponse]:
    try:
        body = m.PredictRequest(instances=instances, routing_key=routing_key)
    except ValidationError as exc:
        raise InvalidInstances(f"not a predict request: {exc.errors()[0]['msg']} "
                               f"({'.'.join(map(str, exc.errors()[0]['loc']))})") from None
    headers = {"X-Mlfleet-Version": str(int(version))} if version is not None else {}
    return Call("gateway", "POST", f"/v1/models/{_seg(model)}/predict", m.PredictResponse,
                json=_body(body), headers=headers, idempotent=True)


def gateway_routes() -> Call[m.RoutesPublic]:
    return Call("gateway", "GET", "/v1/routes", m.RoutesPublic)


# --- monitor ------------------------------------------------------------------------------------

def metrics(model: str, *, window_s: float | None = None) -> Call[m.ModelMetrics]:
    params = {"window_s": window_s} if window_s is not None else {}
    return Call("monitor", "GET", f"/v1/models/{_seg(model)}/metrics", m.ModelMetrics, params=params)


def drift(model: str, *, version: int | None = None) -> Call[m.DriftReport]:
    params = {"version": int(version)} if version is not None else {}
    return Call("monitor", "GET", f"/v1/models/{_seg(model)}/drift", m.DriftReport, params=params)


def alerts(*, model: str | None = None, rule: str | None = None, active: bool = False,
           limit: int = 100) -> Call[m.AlertList]:
    return Call("monitor", "GET", "/v1/alerts", m.AlertList,
                params={"limit": limit, "model": model, "rule": rule, "active": "true" if active else None})


def feedback(items: list[m.FeedbackItem]) -> Call[m.FeedbackReport]:
    """One item is sent as itself, several as a ``{"items": [...]}`` batch."""
    body = [item.model_dump(mode="json", exclude_none=True) for item in items]
    return Call("monitor", "POST", "/v1/feedback", m.FeedbackReport,
                json=body[0] if len(body) == 1 else {"items": body}, idempotent=True)


# --- features -----------------------------------------------------------------------------------

def feature_views() -> Call[m.FeatureViewList]:
    return Call("features", "GET", "/v1/features", m.FeatureViewList)
