"""Request ids that carry their time (UUIDv7)."""

from __future__ import annotations

import time
import uuid

import pytest

from services.common.request_ids import DATED_WITHIN_S, dated_by, made_at, new_request_id


def test_a_new_id_is_a_uuid7_whose_time_reads_back():
    now = time.time()
    request_id = new_request_id(now)
    parsed = uuid.UUID(request_id)
    assert (parsed.version, parsed.variant, parsed.hex) == (7, uuid.RFC_4122, request_id)
    assert made_at(request_id) == int(now * 1000) / 1000
    assert made_at(str(parsed)) == made_at(request_id.upper()) == made_at(request_id)


def test_ids_are_unique_and_sort_by_time():
    ids = [new_request_id(1_700_000_000 + i) for i in range(2000)]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids


@pytest.mark.parametrize("request_id", [
    pytest.param(uuid.uuid4().hex, id="uuid4-hex"), pytest.param(str(uuid.uuid4()), id="uuid4"), "req-1", "", "f" * 32,
    "0190a8b2c3d47e5f8a1b2c3d4e5f6a7",  # 31 digits
    "0190a8b2c3d47e5fca1b2c3d4e5f6a7b",  # variant bits 11
    "0190a8b2c3d4_e5f8a1b2c3d4e5f6a7b", "0190a8b2-c3d4-7e5f-8a1b2c3d4e5f6a7b",
])
def test_other_ids_have_no_time(request_id):
    assert made_at(request_id) is None


def test_an_id_dates_its_prediction_only_when_made_with_it():
    at = 1_800_000_000.0
    assert dated_by(new_request_id(at), at)
    assert dated_by(new_request_id(at - DATED_WITHIN_S / 2), at), "a caller's clock a little off"
    assert not dated_by(new_request_id(at - 3 * 86400), at), "a caller's UUIDv7 made days before (a retry)"
    assert not dated_by("01a218ddfb047c7f8555df807204d96e", at), "a random id with a UUIDv7's shape and another time"
    assert not dated_by("req-1", at)
