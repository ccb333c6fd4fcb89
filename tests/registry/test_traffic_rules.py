from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.registry.models import TrafficPolicy
from services.registry.schemas import TrafficUpdate
from services.registry.traffic import previous_stable_after, previous_stable_until, versions_to_load


@pytest.mark.parametrize(
    "body, message",
    [
        ({"stable": 1, "canary_percent": 10}, "needs a canary"),
        ({"stable": 1, "canary": 1, "canary_percent": 10}, "canary must differ"),
        ({"stable": 1, "shadow": 1}, "shadow must differ"),
        ({"stable": 1, "canary": 2, "canary_percent": 10.005}, "two decimals"),
        ({"stable": 1, "canary": 2, "canary_percent": 100.5}, "less than or equal to 100"),
        ({"stable": 0}, "greater than or equal to 1"),
    ],
)
def test_inconsistent_traffic_updates_are_refused(body, message):
    with pytest.raises(ValidationError, match=message):
        TrafficUpdate.model_validate(body)


def test_canary_percent_keeps_two_decimals():
    assert TrafficUpdate(stable=1, canary=2, canary_percent=12.34).canary_percent == 12.34


def _policy(stable, previous_stable=None):
    return TrafficPolicy(stable=stable, canary=None, canary_percent=0.0, shadow=None, previous_stable=previous_stable,
                         revision=1)


def test_first_policy_keeps_nothing_for_rollback():
    assert previous_stable_after(None, TrafficUpdate(stable=1)) is None


def test_a_new_stable_keeps_the_old_one_for_rollback():
    assert previous_stable_after(_policy(1), TrafficUpdate(stable=2)) == 1


def test_an_unchanged_stable_keeps_the_earlier_rollback_target():
    assert previous_stable_after(_policy(2, previous_stable=1), TrafficUpdate(stable=2, canary=3, canary_percent=5)) == 1


def test_a_rollback_target_that_is_already_named_is_not_repeated():
    assert previous_stable_after(_policy(1), TrafficUpdate(stable=2, canary=1, canary_percent=50)) is None


NOW = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_loaded_versions_are_every_named_version_while_the_previous_stable_is_retained():
    policy = TrafficPolicy(stable=3, canary=4, canary_percent=10.0, shadow=5, previous_stable=2,
                           previous_stable_until=NOW + HOUR, revision=7)
    assert policy.loaded_versions(NOW) == [2, 3, 4, 5]
    assert policy.loaded_versions(NOW + HOUR) == [3, 4, 5]


def test_a_previous_stable_without_retention_is_not_loaded():
    policy = TrafficPolicy(stable=3, canary=None, canary_percent=0.0, shadow=None, previous_stable=2, revision=7)
    assert policy.loaded_versions(NOW) == [3]


def test_a_new_previous_stable_is_retained_from_now():
    promote = TrafficUpdate(stable=2)
    assert previous_stable_until(_policy(1), promote, now=NOW, retention_s=60) == NOW + timedelta(seconds=60)
    assert versions_to_load(_policy(1), promote, now=NOW, retention_s=60) == {1, 2}


def test_an_unchanged_previous_stable_keeps_its_deadline():
    policy = _policy(2, previous_stable=1)
    policy.previous_stable_until = NOW + HOUR
    canary = TrafficUpdate(stable=2, canary=3, canary_percent=5)
    assert previous_stable_until(policy, canary, now=NOW + HOUR / 2, retention_s=7200) == NOW + HOUR
    assert versions_to_load(policy, canary, now=NOW + HOUR / 2, retention_s=7200) == {1, 2, 3}
    assert versions_to_load(policy, canary, now=NOW + HOUR, retention_s=7200) == {2, 3}


def test_no_retention_loads_only_what_the_policy_routes_to():
    assert versions_to_load(_policy(1), TrafficUpdate(stable=2), now=NOW, retention_s=0) == {2}
    assert previous_stable_after(_policy(1), TrafficUpdate(stable=2)) == 1
    assert previous_stable_until(None, TrafficUpdate(stable=1), now=NOW, retention_s=60) is None
