"""The gateway's Prometheus metrics, registered on the app's own registry."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def cached_children(metric: M) -> Callable[..., M]:
    """``metric.labels`` with its children kept: ``labels`` checks its arguments and takes a lock on every call, a
    few µs that the predict path would pay several times per request. The gateway never removes a child."""
    return functools.lru_cache(maxsize=4096)(metric.labels)


@dataclass(frozen=True)
class GatewayMetrics:
    predictions: Counter
    prediction_latency: Histogram
    feature_latency: Histogram
    triton_latency: Histogram
    batch_requests: Histogram
    fallbacks: Counter
    shed: Counter
    shadow_skipped: Counter
    events_enqueued: Counter
    events_dropped: Counter
    events_written: Counter
    policy_revision: Gauge
    rate_limited: Counter
    predict_responses: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> GatewayMetrics:
        return cls(
            predictions=Counter("mlfleet_gateway_predictions", "Prediction requests answered.",
                                ["model", "version", "variant", "status"], registry=registry),
            prediction_latency=Histogram("mlfleet_gateway_prediction_latency_seconds", "Time to answer a prediction request.",
                                         ["model", "variant"], buckets=LATENCY_BUCKETS, registry=registry),
            feature_latency=Histogram("mlfleet_gateway_feature_lookup_seconds", "Time of one online feature lookup.",
                                      buckets=LATENCY_BUCKETS, registry=registry),
            triton_latency=Histogram("mlfleet_gateway_triton_latency_seconds", "Time of one Triton inference call.",
                                     ["model", "version"], buckets=LATENCY_BUCKETS, registry=registry),
            batch_requests=Histogram("mlfleet_gateway_batch_requests",
                                     "Jobs sharing one micro-batch (one feature lookup and one Triton call): a job is "
                                     "a request's inference on one version; a shadow mirror or a canary's fallback "
                                     "to stable is a job of its own.",
                                     ["model"], buckets=BATCH_BUCKETS, registry=registry),
            fallbacks=Counter("mlfleet_gateway_fallbacks", "Canary inferences that failed and were answered by stable.",
                              ["model"], registry=registry),
            shed=Counter("mlfleet_gateway_shed", "Requests answered 503 (overloaded) at once because as many as "
                         "batch_max_queued already waited for a batch of their version.", ["model"], registry=registry),
            shadow_skipped=Counter("mlfleet_gateway_shadow_skipped", "Shadow mirrors skipped because too many were in flight.",
                                   ["model"], registry=registry),
            events_enqueued=Counter("mlfleet_gateway_events_enqueued", "Prediction events queued for the stream.",
                                    registry=registry),
            events_dropped=Counter("mlfleet_gateway_events_dropped",
                                   "Prediction events lost (queue full, Redis write failed, or held at shutdown).",
                                   ["reason"], registry=registry),
            events_written=Counter("mlfleet_gateway_events_written", "Prediction events written to the stream.",
                                   registry=registry),
            policy_revision=Gauge("mlfleet_gateway_policy_revision", "Revision of the routing table being served.",
                                  registry=registry),
            rate_limited=Counter("mlfleet_gateway_rate_limited",
                                 "Pinned requests refused (429): their key was over its rate limit.", registry=registry),
            predict_responses=Counter("mlfleet_gateway_predict_responses",
                                      "Answers of the predict route by HTTP status (it is served ahead of the HTTP "
                                      "middleware, so http_requests_total does not count it).", ["status"],
                                      registry=registry),
        )

    @functools.cached_property
    def predict_responses_by_status(self) -> Callable[[str], Counter]:
        """The child of ``predict_responses`` for one status."""
        return cached_children(self.predict_responses)
