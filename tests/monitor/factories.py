"""Prediction events for the monitor's tests, and how to put them on the stream."""

from __future__ import annotations

import time
import uuid

import redis

from services.common.schemas import PredictionEvent, Variant


def make_event(model: str = "fraud", version: int | None = 1, *, variant: Variant | None = Variant.stable,
               status: str = "ok", error_code: str | None = None, latency_ms: float = 5.0,
               scores: list[float] | None = None, timestamp: float | None = None) -> PredictionEvent:
    scores = [0.5] if scores is None and status == "ok" else (scores or [])
    return PredictionEvent(
        request_id=uuid.uuid4().hex, model=model, version=version, variant=variant,
        timestamp=time.time() if timestamp is None else timestamp, latency_ms=latency_ms, status=status,
        error_code=error_code, instances=len(scores), scores=scores, labels=[int(s >= 0.5) for s in scores],
    )


def mixed_events(n: int, *, models: tuple[str, ...] = ("fraud", "churn")) -> list[PredictionEvent]:
    """``n`` events over two models and two versions, with canaries, errors and varied latencies."""
    events = []
    for i in range(n):
        failed = i % 7 == 0
        canary = i % 3 == 0
        events.append(make_event(
            model=models[i % len(models)], version=4 if canary else 3,
            variant=Variant.canary if canary else Variant.stable,
            status="error" if failed else "ok", error_code=("timeout" if i % 2 else "backend") if failed else None,
            latency_ms=1.0 + (i % 50), scores=[] if failed else [(i % 100) / 100, ((i * 37) % 100) / 100],
        ))
    return events


def publish(client: redis.Redis, stream: str, events: list[PredictionEvent], *, chunk: int = 1000) -> None:
    for offset in range(0, len(events), chunk):
        with client.pipeline(transaction=False) as pipe:
            for event in events[offset:offset + chunk]:
                pipe.xadd(stream, {"event": event.model_dump_json()})
            pipe.execute()
