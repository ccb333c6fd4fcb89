"""Signatures and routes for the gateway's tests."""

from __future__ import annotations

from services.common.schemas import ModelRoute, Signature, SignatureInput, VersionRoute


def signature(*, amount_default: float | None = None, avg_default: float | None = None,
              txn_default: float | None = None) -> Signature:
    """``amount`` (request), ``avg_amount_30d`` and ``txn_count_7d`` (Feast), joined on ``user_id``."""
    return Signature(
        inputs=[
            SignatureInput(name="amount", source="request", default=amount_default),
            SignatureInput(name="avg_amount_30d", source="feast", feature="user_stats:avg_amount_30d", default=avg_default),
            SignatureInput(name="txn_count_7d", source="feast", feature="user_stats:txn_count_7d", default=txn_default),
        ],
        entities=["user_id"],
    )


def model_route(*, stable: int | None = 1, canary: int | None = None, canary_percent: float = 0.0,
                shadow: int | None = None, model: str = "fraud") -> ModelRoute:
    named = sorted({v for v in (stable, canary, shadow) if v is not None})
    return ModelRoute(model=model, revision=1, stable=stable, canary=canary, canary_percent=canary_percent,
                      shadow=shadow, versions=[VersionRoute(version=v, signature=signature()) for v in named])
