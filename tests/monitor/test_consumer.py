"""Unit tests of how the consumer turns a batch of stream entries into counts and acknowledgements."""

from __future__ import annotations

from collections import Counter

from services.monitor.consumer import entry_time_s, tally
from services.monitor.stats import merge
from tests.monitor.factories import make_event


def test_a_batch_with_garbage_acknowledges_everything_and_counts_only_events():
    good = make_event("fraud", 3)
    entries = [(b"1-0", {b"event": good.model_dump_json().encode()}), (b"2-0", {b"event": b"{oops"}),
               (b"3-0", {}), (None, None), (b"4-0", {b"event": good.model_dump_json().encode()})]
    batch = tally(entries)
    assert batch.ids == [b"1-0", b"2-0", b"3-0", b"4-0"]
    assert (batch.invalid, batch.processed) == (2, Counter({("fraud", "3"): 2}))
    assert merge(batch.buckets.values())["requests"] == 2


def test_an_entry_id_tells_when_it_was_added():
    assert entry_time_s(b"1700000000123-7") == 1_700_000_000.123
