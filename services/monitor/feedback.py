"""Ground-truth feedback: join labels with logged predictions, and live quality from the joins.

A label for ``(request_id, instance)`` is applied once to each model: a marker per model set with
``NX`` and the joined rows are written by one Lua script, so a retried or repeated label is reported
as a duplicate and never counted twice, whether it named its model or not. A label that names its
``model`` joins that model's predictions only: a caller that sent one request id to several models
labels each of them; one without it joins the predictions of every model the monitor holds under
that id. Joined rows land in the 10 s bucket of the label's
*arrival*, so "accuracy over the last five minutes" is the accuracy of the labels that
came in during those minutes, whenever their predictions were made.

A label whose prediction is no longer kept is ``late`` when the prediction was made more than
``prediction_ttl_s`` and less than ``seen_ttl_s`` ago, else ``unknown``: known from the seen marker
the monitor kept for the id, or, for an id that dated its prediction (a UUIDv7 as the gateway makes
them: :mod:`services.common.request_ids`), from the id's own time. So a well-formed UUIDv7 that was
never used for a prediction, older than ``prediction_ttl_s``, is reported ``late``. One made less than
:data:`PENDING_S` ago is ``pending``: its prediction's event is most likely still on its way.

Keys: ``mlfleet:monitor:fb:{request_id}:{instance}:{model}`` (applied marker, ``seen_ttl_s``; the previous release's
marker, without ``:{model}``, still counts for every model),
``mlfleet:monitor:labels:{model}:{version}:{bucket}`` (list of ``score,predicted,label``,
``bucket_ttl_s``). Outcomes are counted in ``mlfleet_monitor_feedback_total``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson
import redis.asyncio as aioredis

from services.common.request_ids import DATED_WITHIN_S, made_at
from services.monitor.samples import prediction_key, seen_key
from services.monitor.schemas import FeedbackItem, FeedbackReport, FeedbackResult, Quality
from services.monitor.stats import BUCKET_S
from services.monitor.store import MODELS_KEY, PREFIX


_APPLY_ONCE = """
local models = tonumber(ARGV[3])
local applied = {}
if redis.call('EXISTS', KEYS[1]) == 1 then
  for m = 1, models do applied[m] = 0 end
  return applied
end
local k, a = 2, 4 + models
for m = 1, models do
  local lists = tonumber(ARGV[3 + m])
  local fresh = redis.call('SET', KEYS[k], '1', 'NX', 'EX', ARGV[1])
  for i = 1, lists do
    if fresh then
      redis.call('RPUSH', KEYS[k + i], ARGV[a])
      redis.call('EXPIRE', KEYS[k + i], ARGV[2])
    end
    a = a + 1
  end
  applied[m] = fresh and 1 or 0
  k = k + 1 + lists
end
return applied
"""
"""KEYS[1] the label's marker as the previous release set it (one per request id and instance: such a label is applied
to every model), then per joined model its applied marker and its label lists (one per version); ARGV[1] marker TTL,
ARGV[2] list TTL, ARGV[3] the number of models, then each model's number of lists, then the rows in list order.
Returns per model 1 when applied now, 0 when that model already had this label."""


def labels_key(model: str, version: int, bucket: int) -> str:
    return f"{PREFIX}:labels:{model}:{version}:{bucket}"


def applied_key(request_id: str, instance: int, model: str | None = None) -> str:
    """The marker of a label applied to ``model`` (``None``: the previous release's marker, for every model)."""
    key = f"{PREFIX}:fb:{request_id}:{instance}"
    return key if model is None else f"{key}:{model}"


@dataclass
class Join:
    """A label joined with the predictions it applies to: per model, per version its label list and row."""

    by_model: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)
    """model → ``(version, labels list key, row)`` of each of its versions."""

    def add(self, model: str, version: int, labels_list: str, row: str) -> None:
        self.by_model.setdefault(model, []).append((version, labels_list, row))

    def script_call(self, item: FeedbackItem, *, marker_ttl_s: int, list_ttl_s: int) -> tuple[list[str], list]:
        """``keys`` and ``args`` of :data:`_APPLY_ONCE`."""
        keys, counts, rows = [applied_key(item.request_id, item.instance)], [], []
        for model, joined in self.by_model.items():
            keys += [applied_key(item.request_id, item.instance, model), *(key for _, key, _ in joined)]
            counts.append(len(joined))
            rows += [row for _, _, row in joined]
        return keys, [marker_ttl_s, list_ttl_s, len(self.by_model), *counts, *rows]

    def versions(self, applied: Sequence[int]) -> list[int]:
        """The versions of the models the script applied the label to (``applied``: its answer, per model)."""
        return [version for joined, ok in zip(self.by_model.values(), applied, strict=True) if ok
                for version, _, _ in joined]


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
                pipe.sismember(MODELS_KEY, item.model or "")
            replies = await pipe.execute()
        bucket = int(now // BUCKET_S)
        results: list[FeedbackResult | None] = []
        pending: list[tuple[int, Join]] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for index, item in enumerate(items):
                predictions, seen, known = replies[3 * index], bool(replies[3 * index + 1]), bool(replies[3 * index + 2])
                if item.model is not None and not known:  # a mistyped name, not a prediction still on its way
                    results.append(FeedbackResult(request_id=item.request_id, instance=item.instance,
                                                  outcome="unknown"))
                    continue
                outcome, join = self._join(item, predictions, seen, bucket, now)
                if outcome is not None:
                    results.append(FeedbackResult(request_id=item.request_id, instance=item.instance, outcome=outcome))
                    continue
                results.append(None)
                pending.append((index, join))
                keys, args = join.script_call(item, marker_ttl_s=self._seen_ttl_s, list_ttl_s=self._bucket_ttl_s)
                await self._apply_once(keys=keys, args=args, client=pipe)
            applied = await pipe.execute() if pending else []
        for (index, join), fresh in zip(pending, applied):
            item = items[index]
            results[index] = FeedbackResult(request_id=item.request_id, instance=item.instance,
                                            outcome="accepted" if any(fresh) else "duplicate",
                                            versions=join.versions(fresh))
        final = [r for r in results if r is not None]
        return FeedbackReport(counts=dict(Counter(r.outcome for r in final)), results=final)

    def _join(self, item: FeedbackItem, predictions: dict[bytes, bytes], seen: bool, bucket: int,
              now: float) -> tuple[str | None, Join]:
        """``(outcome, join)``; outcome ``None`` when the label is to be applied. A label naming a model none of the
        id's records are of is judged as one with no record at all: that model's prediction may still be on its way
        (``pending``) while another model's has arrived."""
        records = [orjson.loads(raw) | {"v": int(name.rpartition(b":")[2])} for name, raw in sorted(predictions.items())]
        records = [r for r in records if item.model is None or r["m"] == item.model]
        join = Join()
        if not records:  # a seen marker of an id with other models' records is theirs
            outcome = unjoined_outcome(item.request_id, seen and not predictions, now,
                                       prediction_ttl_s=self._prediction_ttl_s, seen_ttl_s=self._seen_ttl_s)
            return outcome, join
        for record in records:
            scores, labels = record["s"], record["l"]
            if item.instance >= len(scores):
                continue
            predicted = predicted_class(labels, scores, item.instance, record.get("p"))
            join.add(record["m"], record["v"], labels_key(record["m"], record["v"], bucket),
                     f"{float(scores[item.instance])!r},{predicted},{item.label}")
        return ("invalid" if not join.by_model else None), join

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
