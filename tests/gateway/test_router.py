import pytest
from hypothesis import given, strategies as st

from services.common.errors import BackendUnavailable, InvalidInput, ModelNotFound, VersionNotFound
from services.common.schemas import RoutingTable, Variant
from services.gateway.router import RouteBook, bucket_of, choose, pinned
from tests.gateway.factories import model_route

KEYS = [f"user-{i}" for i in range(10_000)]


@pytest.mark.parametrize("percent", [1, 10, 25, 50, 90])
def test_canary_share_over_10000_keys_is_within_one_point_of_the_policy(percent):
    route = model_route(stable=1, canary=2, canary_percent=percent)
    canary = sum(choose(route, key).variant is Variant.canary for key in KEYS)
    assert abs(canary / len(KEYS) * 100 - percent) <= 1


def test_same_key_gets_same_version():
    route = model_route(stable=1, canary=2, canary_percent=50)
    first = [choose(route, key).version.version for key in KEYS[:500]]
    assert [choose(route, key).version.version for key in KEYS[:500]] == first
    assert set(first) == {1, 2}


def test_raising_percent_only_moves_stable_users_to_canary():
    at_10 = model_route(stable=1, canary=2, canary_percent=10)
    at_25 = model_route(stable=1, canary=2, canary_percent=25)
    before = {key: choose(at_10, key).variant for key in KEYS}
    after = {key: choose(at_25, key).variant for key in KEYS}
    assert all(after[key] is Variant.canary for key, variant in before.items() if variant is Variant.canary)
    moved = sum(before[key] is Variant.stable and after[key] is Variant.canary for key in KEYS)
    assert 14 <= moved / len(KEYS) * 100 <= 16


def test_each_models_canary_takes_its_own_share_of_the_callers():
    """At 10 % each, two models share about 1 % of the keys in their canaries (independent), not all 10 %."""
    in_canary = {model: {key for key in KEYS
                         if choose(model_route(stable=1, canary=2, canary_percent=10, model=model), key).variant
                         is Variant.canary}
                 for model in ("fraud", "churn")}
    shared = len(in_canary["fraud"] & in_canary["churn"]) / len(KEYS) * 100
    assert all(9 <= len(keys) / len(KEYS) * 100 <= 11 for keys in in_canary.values())
    assert 0.5 <= shared <= 1.5, shared


@given(st.text(max_size=64))
def test_bucket_is_in_range_with_hundredth_resolution(key):
    bucket = bucket_of("fraud", key)
    assert 0 <= bucket < 100
    assert round(bucket * 100) == pytest.approx(bucket * 100)


def test_zero_and_hundred_percent_are_absolute():
    assert {choose(model_route(stable=1, canary=2, canary_percent=0), k).version.version for k in KEYS[:2000]} == {1}
    assert {choose(model_route(stable=1, canary=2, canary_percent=100), k).version.version for k in KEYS[:2000]} == {2}


def test_canary_without_stable_serves_everything_and_no_version_is_unavailable():
    assert choose(model_route(stable=None, canary=2, canary_percent=5), "k").version.version == 2
    with pytest.raises(BackendUnavailable):
        choose(model_route(stable=None), "k")


def test_pinned_version_must_be_named_by_the_policy():
    route = model_route(stable=1, canary=2, shadow=3)
    assert pinned(route, "3").version.version == 3
    assert pinned(route, "3").variant is Variant.pinned
    with pytest.raises(VersionNotFound):
        pinned(route, "7")
    with pytest.raises(InvalidInput):
        pinned(route, "latest")


def test_route_book_finds_models_and_versions():
    book = RouteBook(RoutingTable(revision=4, models=[model_route(stable=1, canary=2)]))
    assert book.revision == 4
    assert book.version("fraud", 2).version == 2
    with pytest.raises(ModelNotFound):
        book.route("nope")
    with pytest.raises(VersionNotFound):
        book.version("fraud", 9)
