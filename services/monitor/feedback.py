"""Ground-truth feedback: join labels with logged predictions, and live quality from the joins.

A label for ``(request_id, instance)`` is applied once: a marker set with ``NX`` and the
joined rows are written by one Lua script, so a retried or repeated label is reported as a
duplicate and never counted twice. A label that names its ``model`` joins that model's predictions
only, and is applied once per model: a caller that sent one request id to several models labels
each of them; one without it joins the predictions of every model under that id. Joined rows land in the 10 s bucket of the label's
*arrival*, so "accuracy over the last five minutes" is the accuracy of the labels that
came in during those minutes, whenever their predictions were made.

A label whose prediction is no longer kept is ``late`` when the prediction was made more than
``prediction_ttl_s`` and less than ``seen_ttl_s`` ago, else ``unknown``: known from the seen marker
the monitor kept for the id, or, for an id that dated its prediction (a UUIDv7 as the gateway makes
them: :mod:`services.common.request_ids`), from the id's own time. So a well-formed UUIDv7 that was
never used for a prediction, older than ``prediction_ttl_s``, is reported ``late``. One made less than
:data:`PENDING_S` ago is ``pending``: its prediction's event is most likely still on its way.

Keys: ``mlfleet:monitor:fb:{request_id}:{instance}`` (applied marker, ``seen_ttl_s``; with ``:{model}`` for a label
naming its model),
``mlfleet:monitor:labels:{model}:{version}:{bucket}`` (list of ``score,predicted,label``,
``bucket_ttl_s``). Outcomes are counted in ``mlfleet_monitor_feedback_total``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import orjson
import redis.asyncio as aioredis

from services.common.request_ids import DATED_WITHIN_S, made_at
from services.monitor.samples import prediction_key, seen_key
from services.monitor.schemas import FeedbackItem, FeedbackReport, FeedbackResult, Quality
from services.monitor.stats import BUCKET_S
from services.monitor.store import PREFIX


_APPLY_ONCE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 2, #KEYS do
  redis.call('RPUSH', KEYS[i], ARGV[i + 1])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return 1
"""
"""KEYS[1] the applied marker, KEYS[2..] label lists; ARGV[1] marker TTL, ARGV[2] list TTL, ARGV[3..] rows."""


def labels_key(model: str, version: int, bucket: int) -> str:
    return f"{PREFIX}:labels:{model}:{version}:{bucket}"


def applied_key(request_id: str, instance: int, model: str | None = None) -> str:
    key = f"{PREFIX}:fb:{request_id}:{instance}"
    return key if model is None else f"{key}:{model}"


def predicted_class(labels: Sequence, scores: Sequence[float], instance: int, positive: object = None) -> int:
    """1 when the instance was predicted the positive class, else 0: its logged label against the model's ``positive``
    class when the event named it; for events that did not, the logged label when it reads as 0/1, else the score
    against 0.5."""
    if instance < len(labels):
        if positive is not None:
            return int(labels[instance] == positive)
        if str(labels[instance]).lower() in {"0", "1", "true", "false"}:
            return int(str(labels[instance]).lower() in {"1", "true"})
    return int(scores[instance] >= 0.5)


def quality(rows: Sequence[tuple[float, int, int]]) -> Quality | None:
    """scikit-learn's metrics over ``(score, predicted, label)`` rows; ``None`` without rows."""
    if not rows:
        return None
    # Imported on first use: scikit-learn takes seconds to import, which a restarting monitor
    # should not spend before it consumes again.
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    array = np.asarray(rows, dtype=np.float64)
    scores, predicted, truth = array[:, 0], array[:, 1].astype(int), array[:, 2].astype(int)
    return Quality(
        labelled=len(rows),
        accuracy=float(accuracy_score(truth, predicted)),
        precision=float(precision_score(truth, predicted, zero_division=0)),
        recall=float(recall_score(truth, predicted, zero_division=0)),
        f1=float(f1_score(truth, predicted, zero_division=0)),
        roc_auc=float(roc_auc_score(truth, scores)) if len(set(truth.tolist())) == 2 else None,
    )


PENDING_S = 30.0
"""How long after a UUIDv7 request id was made a label that finds no prediction is ``pending``, not ``unknown``."""


def unjoined_outcome(request_id: str, seen: bool, now: float, *, prediction_ttl_s: float, seen_ttl_s: float) -> str:
    """``late``, ``pending`` or ``unknown``, for a label that found no prediction to join: ``late`` when the monitor
    kept a seen marker for the id (``seen``), or when the id is a UUIDv7 made more than ``prediction_ttl_s`` and less
    than ``seen_ttl_s`` ago (the monitor kept no marker for an id that dated its prediction); ``pending`` when the
    id is a UUIDv7 made less than :data:`PENDING_S` ago (or, clocks apart, up to a minute ahead): its prediction is
    most likely still on its way through the event stream, and the label can be sent again in a moment."""
    if seen:
        return "late"
    made = made_at(request_id)
    if made is None:
        return "unknown"
    age = now - made
    if prediction_ttl_s <= age:
        return "late" if age < max(seen_ttl_s, prediction_ttl_s) else "unknown"
    return "pending" if -DATED_WITHIN_S <= age < PENDING_S else "unknown"


class FeedbackStore:
    def __init__(self, redis: aioredis.Redis, *, prediction_ttl_s: int, seen_ttl_s: int, bucket_ttl_s: int) -> None:
        self._redis = redis
        self._prediction_ttl_s = prediction_ttl_s
        self._seen_ttl_s = max(seen_ttl_s, prediction_ttl_s)
        """Also how long a label is remembered as applied: at least as long as its prediction can be joined, so a
        label sent again while the prediction is kept is a duplicate, never accepted twice."""
        self._bucket_ttl_s = bucket_ttl_s
        self._apply_once = redis.register_script(_APPLY_ONCE)

    async def submit(self, items: Sequence[FeedbackItem], *, now: float) -> FeedbackReport:
        """Join each label with its logged predictions (served and shadow versions) and apply it once."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for item in items:
                pipe.hgetall(prediction_key(item.request_id))
                pipe.exists(seen_key(item.request_id))
            replies = await pipe.execute()
        bucket = int(now // BUCKET_S)
        results: list[FeedbackResult | None] = []
        pending: list[tuple[int, list[int]]] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for index, item in enumerate(items):
                predictions, seen = replies[2 * index], bool(replies[2 * index + 1])
                outcome, keys, rows, versions = self._join(item, predictions, seen, bucket, now)
                if outcome is not None:
                    results.append(FeedbackResult(request_id=item.request_id, instance=item.instance, outcome=outcome))
                    continue
                results.append(None)
                pending.append((index, versions))
                await self._apply_once(keys=[applied_key(item.request_id, item.instance, item.model), *keys],
                                       args=[self._seen_ttl_s, self._bucket_ttl_s, *rows], client=pipe)
            applied = await pipe.execute() if pending else []
        for (index, versions), ok in zip(pending, applied):
            item = items[index]
            results[index] = FeedbackResult(request_id=item.request_id, instance=item.instance,
                                            outcome="accepted" if ok else "duplicate", versions=versions if ok else [])
        final = [r for r in results if r is not None]
        return FeedbackReport(counts=dict(Counter(r.outcome for r in final)), results=final)

    def _join(self, item: FeedbackItem, predictions: dict[bytes, bytes], seen: bool, bucket: int,
              now: float) -> tuple[str | None, list[str], list[str], list[int]]:
        """``(outcome, keys, rows, versions)``; outcome ``None`` when the label is to be applied."""
        if not predictions:
            outcome = unjoined_outcome(item.request_id, seen, now, prediction_ttl_s=self._prediction_ttl_s,
                                       seen_ttl_s=self._seen_ttl_s)
            return outcome, [], [], []
        keys, rows, versions = [], [], []
        for field, raw in sorted(predictions.items()):
            prediction = orjson.loads(raw)
            if item.model is not None and prediction["m"] != item.model:
                continue
            scores, labels = prediction["s"], prediction["l"]
            if item.instance >= len(scores):
                continue
            version = int(field.rpartition(b":")[2])
            predicted = predicted_class(labels, scores, item.instance, prediction.get("p"))
            keys.append(labels_key(prediction["m"], version, bucket))
            rows.append(f"{float(scores[item.instance])!r},{predicted},{item.label}")
            versions.append(version)
        if not keys:
            named = item.model is None or any(orjson.loads(raw)["m"] == item.model for raw in predictions.values())
            return "invalid" if named else "unknown", [], [], []
        return None, keys, rows, versions

    async def rows(self, model: str, version: int, buckets: range) -> list[tuple[float, int, int]]:
        """The joined ``(score, predicted, label)`` rows of ``buckets``."""
        return [row for rows in await self.rows_per_bucket(model, version, buckets) for row in rows]

    async def rows_per_bucket(self, model: str, version: int, buckets: range) -> list[list[tuple[float, int, int]]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.lrange(labels_key(model, version, bucket), 0, -1)
            replies = await pipe.execute()
        return [[_row(raw) for raw in reply] for reply in replies]


def _row(raw: bytes) -> tuple[float, int, int]:
    score, predicted, label = raw.decode().split(",")
    return float(score), int(predicted), int(label)
