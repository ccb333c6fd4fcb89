"""The gateway's feature reader against Feast's own SDK, on real Feast data in the suite's Redis."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
import redis
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import DoubleList, Value
from prometheus_client import CollectorRegistry, Histogram

from services.common.errors import BackendUnavailable, FeatureLookupTimeout, InvalidInput
from services.common.feature_store import open_feature_store
from services.gateway.features import (FeatureReader, ViewSpec, features_by_view, field_name, plan_view_read,
                                       python_value, row_keys)
from tests.gateway.conftest import USERS, apply_user_stats

FEATURES = ["user_stats:avg_amount_30d", "user_stats:txn_count_7d"]


def view_keyed_by(*columns: Field) -> FeatureView:
    source = FileSource(name="s", path="s.parquet", timestamp_field="event_timestamp")
    entities = [Entity(name=c.name, join_keys=[c.name], value_type=c.dtype.to_value_type()) for c in columns]
    return FeatureView(name="v", entities=entities, ttl=timedelta(days=1), source=source,
                       schema=[*columns, Field(name="x", dtype=Float64)])


def test_features_are_grouped_by_view_in_order():
    assert features_by_view(["a:x", "b:y", "a:z"]) == {"a": ("x", "z"), "b": ("y",)}


def plan(view: FeatureView, rows: list[dict]):
    spec = ViewSpec.of(view, versioned=False)
    return plan_view_read(spec, ["x"], row_keys(spec, rows, b"mlfleet", 3))


def test_each_entity_is_read_once_and_rows_point_at_it():
    read = plan(view_keyed_by(Field(name="user_id", dtype=Int64)), [{"user_id": 7}, {"user_id": 9}, {"user_id": 7}])
    assert len(read.keys) == 2 and len(set(read.keys)) == 2
    assert read.positions == [0, 1, 0]
    assert all(key.endswith(b"mlfleet") for key in read.keys)


def test_compound_keys_tell_entities_apart_by_every_join_key():
    view = view_keyed_by(Field(name="user_id", dtype=Int64), Field(name="country", dtype=String))
    rows = [{"user_id": 7, "country": "fr"}, {"user_id": 7, "country": "de"}, {"user_id": 7, "country": "fr"}]
    read = plan(view, rows)
    assert len(set(read.keys)) == 2
    assert read.positions == [0, 1, 0]


def test_keys_are_feasts_own_for_one_and_for_several_join_keys():
    """The keys the reader builds (a single join key and a compound one take different paths) are byte for byte
    what Feast's key encoding makes of the same values."""
    one = ViewSpec.of(view_keyed_by(Field(name="user_id", dtype=Int64)), versioned=False)
    two = ViewSpec.of(view_keyed_by(Field(name="user_id", dtype=Int64), Field(name="country", dtype=String)),
                      versioned=False)
    rows = [{"user_id": 7, "country": "fr"}, {"user_id": -3, "country": "de"}]

    def feasts(join_keys: list[str], row: dict) -> bytes:
        values = [Value(int64_val=row[k]) if k == "user_id" else Value(string_val=row[k]) for k in join_keys]
        return serialize_entity_key(EntityKey(join_keys=join_keys, entity_values=values),
                                    entity_key_serialization_version=3) + b"mlfleet"

    assert row_keys(one, rows, b"mlfleet", 3) == [feasts(["user_id"], row) for row in rows]
    assert row_keys(two, rows, b"mlfleet", 3) == [feasts(["user_id", "country"], row) for row in rows]
    assert row_keys(one, rows, b"other", 3) != row_keys(one, rows, b"mlfleet", 3)


def test_a_key_feast_cannot_encode_is_the_callers_error():
    with pytest.raises(InvalidInput, match="user_id"):
        plan(view_keyed_by(Field(name="user_id", dtype=Int64)), [{"user_id": "not-a-number"}])


def test_a_join_key_the_rows_lack_is_the_versions_configuration_not_a_crash():
    """The rows carry the signature's entities; a view keyed by another one cannot be read for this version."""
    view = view_keyed_by(Field(name="user_id", dtype=Int64), Field(name="country", dtype=String))
    with pytest.raises(BackendUnavailable, match="'country'"):
        plan(view, [{"user_id": 7}])


def test_a_stored_value_that_is_not_a_feast_value_is_unavailable_not_a_crash(feast_dir, redis_url):
    """A corrupt (or foreign) value in an entity's hash: the lookup answers 503, like any store failure."""
    client = redis.Redis.from_url(redis_url)
    row = {"user_id": max(USERS) + 77}
    written: list[bytes] = []

    async def lookup():
        reader, _ = reader_and_store(feast_dir, redis_url)
        await reader.warm_up()
        written.append(reader.entity_keys(FEATURES, [row])["user_stats"].keys[0])
        client.hset(written[0], field_name("user_stats", "avg_amount_30d"), b"\xff\xff not a Feast value")
        try:
            await reader.lookup(FEATURES, [row])
        finally:
            await reader.close()

    try:
        with pytest.raises(BackendUnavailable, match="online feature store failed"):
            asyncio.run(lookup())
    finally:
        client.delete(*written)
        client.close()


def test_stored_values_become_python_values():
    assert python_value(Value(int64_val=3).SerializeToString()) == 3
    assert python_value(Value(string_val="fr").SerializeToString()) == "fr"
    assert python_value(Value(double_list_val=DoubleList(val=[1.5, 2.0])).SerializeToString()) == [1.5, 2.0]
    assert python_value(Value().SerializeToString()) is None
    assert python_value(None) is None


def test_a_view_that_cannot_be_read_online_does_not_hide_the_others():
    """A registry refresh skips (and logs) a view whose entities it cannot plan for; the other views still serve."""
    class Unreadable:
        name = "broken"

        @property
        def entity_columns(self):
            raise ValueError("no value type for this entity")

    config = SimpleNamespace(project="p", entity_key_serialization_version=3,
                             registry=SimpleNamespace(enable_online_feature_view_versioning=False))
    store = SimpleNamespace(config=config, refresh_registry=lambda: None,
                            list_feature_views=lambda: [Unreadable(), view_keyed_by(Field(name="user_id", dtype=Int64))])
    reader = FeatureReader(store, "redis://127.0.0.1:1/0", timeout_s=0.1, registry_refresh_s=5,
                           latency=Histogram("lookup_seconds", "lookup", registry=CollectorRegistry()))
    asyncio.run(reader.reload_views())
    with pytest.raises(InvalidInput, match="user_id"):  # the good view is planned: its key type is checked
        reader.entity_keys(["v:x"], [{"user_id": "not-a-number"}])
    # the skipped view is left to the lookup (a 503)
    assert list(reader.entity_keys(["broken:x", "v:x"], [{"user_id": 1}])) == ["v"]


@pytest.fixture(scope="module")
def feast_dir(workdir, redis_url):
    path = workdir / "feature-reader" / "feast"
    apply_user_stats(path, redis_url)
    return path


def reader_and_store(feast_dir, redis_url, latency: Histogram | None = None, timeout_s: float = 5):
    store = open_feature_store(redis_url=redis_url, feast_dir=feast_dir, registry_cache_ttl_s=0,
                               registry_cache_mode="thread")
    latency = latency or Histogram("lookup_seconds", "lookup", registry=CollectorRegistry())
    return FeatureReader(store, redis_url, timeout_s=timeout_s, latency=latency, registry_refresh_s=60), store


def test_lookup_matches_feasts_sdk(feast_dir, redis_url):
    absent = max(USERS) + 1000
    rows = [{"user_id": u} for u in (3, 17, absent, 3, 40)]

    async def both():
        reader, store = reader_and_store(feast_dir, redis_url)
        await reader.warm_up()
        try:
            ours = await reader.lookup(FEATURES, rows)
            planned = await reader.lookup(FEATURES, rows, reader.entity_keys(FEATURES, rows))
            sdk = (await store.get_online_features_async(features=FEATURES, entity_rows=rows,
                                                         full_feature_names=True)).to_dict()
        finally:
            await reader.close()
        assert planned == ours  # keys planned with the request read the same values
        return ours, sdk

    ours, sdk = asyncio.run(both())
    assert ours == {f: sdk[f.replace(":", "__")] for f in FEATURES}
    assert ours["user_stats:avg_amount_30d"][2] is None
    assert ours["user_stats:txn_count_7d"][0] == ours["user_stats:txn_count_7d"][3] is not None


def test_the_warm_up_is_not_counted_as_a_lookup(feast_dir, redis_url):
    registry = CollectorRegistry()
    latency = Histogram("lookup_seconds", "lookup", registry=registry)

    async def warm_then_look_up():
        reader, _ = reader_and_store(feast_dir, redis_url, latency)
        try:
            await reader.warm_up()
            warmed = registry.get_sample_value("lookup_seconds_count")
            await reader.lookup(FEATURES, [{"user_id": 3}])
            return warmed, registry.get_sample_value("lookup_seconds_count")
        finally:
            await reader.close()

    assert asyncio.run(warm_then_look_up()) == (0, 1)


def test_unknown_view_is_unavailable_not_a_crash(feast_dir, redis_url):
    async def lookup():
        reader, _ = reader_and_store(feast_dir, redis_url)
        try:
            await reader.lookup(["no_such_view:x"], [{"user_id": 1}])
        finally:
            await reader.close()

    with pytest.raises(BackendUnavailable, match="no_such_view"):
        asyncio.run(lookup())


def test_a_feature_the_view_lacks_is_unavailable_not_silently_absent(feast_dir, redis_url):
    async def lookup():
        reader, _ = reader_and_store(feast_dir, redis_url)
        await reader.warm_up()
        try:
            await reader.lookup(["user_stats:avg_amount_30d", "user_stats:no_such_feature"], [{"user_id": 1}])
        finally:
            await reader.close()

    with pytest.raises(BackendUnavailable, match="no_such_feature"):
        asyncio.run(lookup())


def test_a_registry_reload_cut_short_by_a_lookups_deadline_still_serves_the_next_lookup(feast_dir, redis_url):
    """The first lookup names views the gateway has not read yet: its registry reload outlasts the lookup's deadline
    (504), runs on, and the next lookup, arriving while it runs, waits for it and reads with its views."""
    released = threading.Event()

    async def two_lookups():
        reader, store = reader_and_store(feast_dir, redis_url, timeout_s=0.5)
        refresh = store.refresh_registry

        def held_refresh() -> None:
            released.wait(30)
            refresh()

        store.refresh_registry = held_refresh
        try:
            with pytest.raises(FeatureLookupTimeout):
                await reader.lookup(FEATURES, [{"user_id": 3}])
            released.set()
            return await reader.lookup(FEATURES, [{"user_id": 3}])
        finally:
            released.set()
            await reader.close()

    found = asyncio.run(two_lookups())
    assert found["user_stats:txn_count_7d"][0] is not None
