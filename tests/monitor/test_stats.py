"""Unit tests of the aggregate, histogram, percentile and window logic."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import InvalidInput
from services.common.schemas import Variant
from services.monitor import stats
from services.monitor.stats import (
    BUCKET_S, LATENCY_EDGES_MS, SCORE_BINS, InvalidEvent, accumulate, event_counters, latency_bucket, merge, parse_event,
    quantile, resolve_window, score_bucket, summarize,
)
from tests.monitor.factories import make_event

latencies = st.floats(min_value=0, max_value=200_000, allow_nan=False)
quantiles = st.floats(min_value=0, max_value=1)


def test_latency_buckets_are_log_spaced_from_a_tenth_of_a_millisecond():
    assert LATENCY_EDGES_MS[:2] == (0.0, 0.1)
    assert LATENCY_EDGES_MS[-1] == pytest.approx(100_000)
    ratios = {round(b / a, 9) for a, b in zip(LATENCY_EDGES_MS[1:], LATENCY_EDGES_MS[2:])}
    assert ratios == {round(10 ** (1 / 20), 9)}
    assert latency_bucket(0.0) == 0
    assert latency_bucket(0.1) == 1
    assert latency_bucket(1e9) == len(LATENCY_EDGES_MS) - 1


@given(latencies)
def test_a_latency_lies_in_its_bucket(latency):
    i = latency_bucket(latency)
    assert LATENCY_EDGES_MS[i] <= latency
    assert i == len(LATENCY_EDGES_MS) - 1 or latency < LATENCY_EDGES_MS[i + 1]


@pytest.mark.parametrize(("score", "index"), [(0.0, 0), (0.049, 0), (0.05, 1), (0.5, 10), (0.999, 19), (1.0, 19),
                                              (-0.2, 0), (1.7, 19), (math.nan, None), (math.inf, None)])
def test_score_bins_cover_zero_to_one_and_clamp(score, index):
    assert score_bucket(score) == index


def test_parse_event_accepts_a_prediction_event():
    event = make_event(model="fraud", version=4)
    assert parse_event(event.model_dump_json().encode()) == event


@pytest.mark.parametrize("raw", [
    None, b"", b"not json", b"{}", b'{"request_id": "r", "model": "fraud", "timestamp": 1, "latency_ms": -1}',
    b'{"request_id": "r", "model": "Bad Model", "timestamp": 1, "latency_ms": 1}',
    b'{"request_id": "r", "model": "fraud", "timestamp": 1, "latency_ms": 1e999}',
    b'{"request_id": "r", "model": "fraud", "timestamp": -5, "latency_ms": 1}',
    # values that would overflow Redis's 64-bit counters, failing the whole batch's transaction half applied
    b'{"request_id": "r", "model": "fraud", "timestamp": 1, "latency_ms": 1e16}',
    b'{"request_id": "r", "model": "fraud", "timestamp": 1, "latency_ms": 1, "instances": 9223372036854775807}',
])
def test_parse_event_rejects_what_cannot_be_counted(raw):
    with pytest.raises(InvalidEvent):
        parse_event(raw)


def test_counters_of_a_successful_event():
    event = make_event(version=3, variant=Variant.canary, latency_ms=2.5, scores=[0.1, 0.97, math.nan])
    assert event_counters(event) == Counter({
        "requests": 1, "predictions": 3, f"lat:{latency_bucket(2.5)}": 1, "lat_sum_us": 2500,
        "score:2": 1, "score:19": 1, "variant:canary": 1,
    })


def test_counters_of_a_failed_event():
    event = make_event(status="error", error_code="timeout", variant=None, latency_ms=30)
    assert event_counters(event) == Counter({
        "requests": 1, "errors": 1, "errors:timeout": 1, f"lat:{latency_bucket(30)}": 1, "lat_sum_us": 30_000,
    })
    assert event_counters(make_event(status="error", error_code=None))["errors:unknown"] == 1


def test_accumulate_splits_by_model_version_and_bucket():
    b = BUCKET_S
    events = [make_event("fraud", 1, timestamp=2 * b + 0.5), make_event("fraud", 1, timestamp=3 * b - 0.1),
              make_event("fraud", 1, timestamp=3 * b), make_event("fraud", 2, timestamp=2 * b),
              make_event("churn", None, timestamp=2 * b)]
    buckets = accumulate(events)
    assert {k: c["requests"] for k, c in buckets.items()} == {
        ("fraud", 1, 2): 2, ("fraud", 1, 3): 1, ("fraud", 2, 2): 1, ("churn", None, 2): 1,
    }


event_lists = st.lists(
    st.builds(make_event, model=st.sampled_from(["fraud", "churn"]), version=st.sampled_from([1, 2, None]),
              status=st.sampled_from(["ok", "error"]), latency_ms=latencies,
              scores=st.lists(st.floats(min_value=0, max_value=1), max_size=4),
              timestamp=st.floats(min_value=0, max_value=600)),
    max_size=30,
)


@given(event_lists, st.integers(min_value=0, max_value=30))
def test_counts_are_conserved_across_buckets_and_batches(events, cut):
    whole = accumulate(events)
    total = merge(whole.values())
    assert total["requests"] == len(events)
    assert sum(stats.histogram(total, "lat", len(LATENCY_EDGES_MS))) == len(events)
    assert sum(stats.histogram(total, "score", SCORE_BINS)) == sum(len(e.scores) for e in events)
    assert total["errors"] == sum(e.status == "error" for e in events)
    in_two_batches = merge([*accumulate(events[:cut]).values(), *accumulate(events[cut:]).values()])
    assert in_two_batches == total


def test_quantile_interpolates_inside_the_bucket():
    edges = [0.0, 10.0, 20.0, 40.0]
    assert quantile([0, 10, 0, 0], edges, 0.5) == 15.0
    assert quantile([0, 10, 0, 0], edges, 1.0) == 20.0
    assert quantile([5, 0, 5, 0], edges, 0.75) == 30.0
    assert quantile([0, 0, 0, 3], edges, 0.99) == 40.0
    with pytest.raises(ValueError):
        quantile([0, 0, 0, 0], edges, 0.5)
    with pytest.raises(ValueError):
        quantile([1], [0.0], 1.5)


@given(st.lists(latencies, min_size=1, max_size=200), quantiles, quantiles)
def test_percentiles_are_monotone(samples, q1, q2):
    counts = histogram_of(samples)
    low, high = sorted((q1, q2))
    assert quantile(counts, LATENCY_EDGES_MS, low) <= quantile(counts, LATENCY_EDGES_MS, high)


@given(st.lists(latencies, min_size=1, max_size=200), st.floats(min_value=0.01, max_value=1))
def test_a_percentile_lies_in_the_bucket_of_the_true_one(samples, q):
    counts = histogram_of(samples)
    true_value = sorted(samples)[math.ceil(q * len(samples)) - 1]
    i = latency_bucket(true_value)
    estimate = quantile(counts, LATENCY_EDGES_MS, q)
    upper = LATENCY_EDGES_MS[i + 1] if i + 1 < len(LATENCY_EDGES_MS) else LATENCY_EDGES_MS[i]
    assert LATENCY_EDGES_MS[i] <= estimate <= upper


def histogram_of(samples):
    counts = [0] * len(LATENCY_EDGES_MS)
    for sample in samples:
        counts[latency_bucket(sample)] += 1
    return counts


def test_summarize_a_version():
    events = [make_event(version=2, latency_ms=10, scores=[0.2, 0.3]),
              make_event(version=2, variant=Variant.canary, latency_ms=20, scores=[0.9]),
              make_event(version=2, status="error", error_code="timeout", latency_ms=30),
              make_event(version=2, status="error", error_code="timeout", latency_ms=40)]
    metrics = summarize(2, merge(accumulate(events).values()))
    assert (metrics.version, metrics.requests, metrics.predictions, metrics.errors) == (2, 4, 3, 2)
    assert metrics.error_rate == 0.5
    assert metrics.errors_by_code == {"timeout": 2}
    assert metrics.variants == {"canary": 1, "stable": 3}
    assert metrics.latency_ms.mean == pytest.approx(25.0)
    assert 10 <= metrics.latency_ms.p50 <= 20 * 1.13
    assert metrics.latency_ms.p50 <= metrics.latency_ms.p95 <= metrics.latency_ms.p99 <= 40 * 1.13
    assert metrics.score_histogram.edges == [i / 20 for i in range(21)]
    assert metrics.score_histogram.counts == [0] * 4 + [1, 0, 1] + [0] * 11 + [1, 0]


def test_summarize_an_idle_version():
    metrics = summarize(None, {})
    assert (metrics.requests, metrics.error_rate, metrics.latency_ms) == (0, 0.0, None)
    assert metrics.score_histogram.counts == [0] * SCORE_BINS


def test_window_defaults_to_the_last_five_minutes():
    buckets = resolve_window(window_s=None, start=None, end=None, now=1000.0, retention_s=3600)
    assert (buckets.first, buckets.last) == ((1000 - 300) // BUCKET_S, math.ceil(1000 / BUCKET_S) - 1)
    assert buckets.window().model_dump() == {
        "start": (1000 - 300) // BUCKET_S * BUCKET_S, "end": math.ceil(1000 / BUCKET_S) * BUCKET_S, "bucket_s": BUCKET_S,
    }


def test_window_between_start_and_end():
    buckets = resolve_window(window_s=None, start=2 * BUCKET_S, end=4 * BUCKET_S, now=10_000, retention_s=3600)
    assert list(buckets.buckets()) == [2, 3]


@given(st.floats(min_value=0, max_value=1e9), st.floats(min_value=0.001, max_value=86_400))
def test_the_buckets_cover_the_window_and_at_most_a_bucket_more_each_side(start, length):
    window = resolve_window(window_s=None, start=start, end=start + length, now=0, retention_s=86_400).window()
    assert window.start <= start < window.start + BUCKET_S
    assert window.end - BUCKET_S < start + length <= window.end


@pytest.mark.parametrize(("window_s", "start", "end"), [
    (0, None, None), (-5, None, None), (3601, None, None), (math.inf, None, None), (60, 10, 20),
    (None, 10, None), (None, None, 10), (None, 20, 10), (None, 20, 20), (None, 0, 7200),
])
def test_bad_windows_are_invalid_input(window_s, start, end):
    with pytest.raises(InvalidInput):
        resolve_window(window_s=window_s, start=start, end=end, now=10_000, retention_s=3600)


def test_a_window_longer_than_one_query_may_read_names_the_setting():
    assert resolve_window(window_s=600, start=None, end=None, now=10_000, retention_s=3600, max_window_s=600)
    with pytest.raises(InvalidInput, match="query_window_max_s"):
        resolve_window(window_s=601, start=None, end=None, now=10_000, retention_s=3600, max_window_s=600)
    assert resolve_window(window_s=None, start=0, end=601, now=10_000, retention_s=3600, max_window_s=600), \
        "a span named by its edges (a rollout step's) is bounded by the retention alone"

