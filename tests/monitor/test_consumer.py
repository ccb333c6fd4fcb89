"""Unit tests of how the consumer turns a batch of stream entries into counts and acknowledgements."""

from __future__ import annotations

from collections import Counter

from services.monitor.consumer import entry_time_s, tally
from services.monitor.stats import accumulate, bucket_key, merge
from tests.monitor.factories import make_event


def test_a_batch_with_garbage_acknowledges_everything_and_counts_only_events():
    good = make_event("fraud", 3)
    entries = [(b"1-0", {b"event": good.model_dump_json().encode()}), (b"2-0", {b"event": b"{oops"}),
               (b"3-0", {}), (None, None), (b"4-0", {b"event": good.model_dump_json().encode()})]
    batch = tally(entries)
    assert batch.ids == [b"1-0", b"2-0", b"3-0", b"4-0"]
    assert (batch.invalid, batch.processed) == (2, Counter({("fraud", "3"): 2}))
    assert merge(batch.buckets.values())["requests"] == 2


def test_an_event_whose_counters_overflow_is_invalid_and_adds_nothing_to_its_bucket():
    """Its latency is finite but too large for microseconds: refused whole, not half-counted into a bucket it shares
    with a valid event."""
    good = make_event("fraud", 3, timestamp=1_700_000_000.0)
    bad = make_event("fraud", 3, latency_ms=1e308, timestamp=1_700_000_001.0)
    batch = tally([(b"1-0", {b"event": good.model_dump_json().encode()}),
                   (b"2-0", {b"event": bad.model_dump_json().encode()})])
    assert batch.invalid == 1
    assert list(batch.buckets.values()) == [accumulate([good])[bucket_key(good)]]
    assert tally([(b"3-0", {b"event": bad.model_dump_json().encode()})]).buckets == {}


def test_an_entry_id_tells_when_it_was_added():
    assert entry_time_s(b"1700000000123-7") == 1_700_000_000.123
