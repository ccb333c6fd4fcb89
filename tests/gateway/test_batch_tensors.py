"""A micro-batch's tensors are built at once, yet each request keeps its own rows and its own error."""

import numpy as np
import pytest
from feast.value_type import ValueType
from prometheus_client import CollectorRegistry

from services.common.errors import InvalidInput, MissingFeatures
from services.common.schemas import Variant, VersionRoute
from services.gateway.features import PlannedKeys, ViewSpec
from services.gateway.metrics import GatewayMetrics
from services.gateway.predictions import InferenceJob, Predictor, batch_entity_keys, build_tensors
from services.gateway.tensors import build_tensor
from tests.gateway.factories import signature

SIGNATURE = signature()
VERSION = VersionRoute(version=1, signature=SIGNATURE)


def job(*instances: dict, keys: dict[str, PlannedKeys] | None = None) -> InferenceJob:
    return InferenceJob(VERSION, Variant.stable, list(instances), [{"user_id": i["user_id"]} for i in instances],
                        keys or {})


def view(name: str, *join_keys: str) -> ViewSpec:
    return ViewSpec(name, name, join_keys, tuple(ValueType.INT64 for _ in join_keys), frozenset({"x"}))


USERS, SHOPS = view("users", "user_id"), view("shops", "shop_id")


def test_a_batch_reads_the_keys_its_requests_planned_in_row_order():
    jobs = [job({"user_id": 1}, keys={"users": PlannedKeys(USERS, [b"u1"]), "shops": PlannedKeys(SHOPS, [b"s1"])}),
            job({"user_id": 2}, {"user_id": 3}, keys={"users": PlannedKeys(USERS, [b"u2", b"u3"])})]
    # a view one request has not planned (not cached when it was checked) is left to the lookup to plan
    assert batch_entity_keys(jobs) == {"users": PlannedKeys(USERS, [b"u1", b"u2", b"u3"])}
    assert batch_entity_keys(jobs[:1]) == jobs[0].entity_keys


def test_keys_planned_with_a_view_that_changed_in_between_are_planned_again():
    changed = view("users", "user_id", "region")  # the registry refreshed between the two requests
    jobs = [job({"user_id": 1}, keys={"users": PlannedKeys(USERS, [b"u1"])}),
            job({"user_id": 2}, keys={"users": PlannedKeys(changed, [b"u2"])})]
    assert batch_entity_keys(jobs) == {}


def test_a_valid_batch_gives_each_job_its_own_rows():
    jobs = [job({"user_id": 1, "amount": 1.0}), job({"user_id": 2, "amount": 2.0}, {"user_id": 3, "amount": 3})]
    found = {"user_stats:avg_amount_30d": [10.0, 20.0, 30.0], "user_stats:txn_count_7d": [1, 2, 3]}
    first, second = build_tensors(SIGNATURE, jobs, found)
    np.testing.assert_array_equal(first, [[1.0, 10.0, 1]])
    np.testing.assert_array_equal(second, [[2.0, 20.0, 2], [3.0, 30.0, 3]])
    assert first.flags.c_contiguous and second.flags.c_contiguous


@pytest.mark.parametrize(("bad", "error"), [({"user_id": 2, "amount": "2"}, InvalidInput),
                                            ({"user_id": 2, "amount": 2.0}, MissingFeatures)])
def test_an_invalid_job_fails_alone_and_the_others_keep_their_rows(bad, error):
    jobs = [job({"user_id": 1, "amount": 1.0}), job(bad), job({"user_id": 3, "amount": 3.0})]
    found = {"user_stats:avg_amount_30d": [10.0, None if error is MissingFeatures else 20.0, 30.0],
             "user_stats:txn_count_7d": [1, None if error is MissingFeatures else 2, 3]}
    first, failed, third = build_tensors(SIGNATURE, jobs, found)
    assert isinstance(failed, error)
    if error is InvalidInput:  # the instance is numbered within its own request, not within the batch
        assert failed.extra["instance_index"] == 0
    else:
        assert [m["instance"] for m in failed.extra["missing"]] == [0]
    np.testing.assert_array_equal(first, build_tensor(SIGNATURE, jobs[0].instances,
                                                      {k: v[:1] for k, v in found.items()}))
    np.testing.assert_array_equal(third, [[3.0, 30.0, 3]])


def test_a_lone_invalid_job_gets_its_error():
    found = {"user_stats:avg_amount_30d": [10.0], "user_stats:txn_count_7d": [1]}
    [failed] = build_tensors(SIGNATURE, [job({"user_id": 1, "amount": float("nan")})], found)
    assert isinstance(failed, InvalidInput) and failed.extra["field"] == "amount"


class UnplannedLookup:
    """A feature lookup for views no request planned keys for (not cached when the requests were checked): it
    encodes every row's join key itself, as :class:`~services.gateway.features.FeatureReader` then does, and one it
    cannot encode fails the whole lookup."""

    def __init__(self) -> None:
        self.calls: list[list[object]] = []

    async def lookup(self, features, rows, keys=None) -> dict[str, list]:
        self.calls.append([row["user_id"] for row in rows])
        if any(not isinstance(row["user_id"], int) for row in rows):
            raise InvalidInput("join key user_id cannot be encoded", field="user_id")
        return {"user_stats:avg_amount_30d": [10.0 * row["user_id"] for row in rows],
                "user_stats:txn_count_7d": [row["user_id"] for row in rows]}


async def test_a_join_key_only_the_batch_lookup_could_check_fails_its_own_request_alone():
    lookup = UnplannedLookup()
    predictor = Predictor(policy=None, features=lookup, triton=None, events=None,
                          metrics=GatewayMetrics.create(CollectorRegistry()), max_instances=64, shadow_max_in_flight=1,
                          batch_max_rows=64, batch_max_in_flight=2)
    jobs = [job({"user_id": 1, "amount": 1.0}), job({"user_id": "x", "amount": 2.0}), job({"user_id": 3, "amount": 3.0})]
    first, failed, third = await predictor._tensors(SIGNATURE, jobs)
    assert isinstance(failed, InvalidInput) and failed.extra["field"] == "user_id"
    np.testing.assert_array_equal(first, [[1.0, 10.0, 1]])
    np.testing.assert_array_equal(third, [[3.0, 30.0, 3]])
    assert lookup.calls == [[1, "x", 3], [1], ["x"], [3]], "the batch once, then each request alone"
    [alone] = await predictor._tensors(SIGNATURE, [jobs[1]])
    assert isinstance(alone, InvalidInput)
    inferred_before = job({"user_id": 4, "amount": 4.0})  # a shadow's job arrives with its tensor built
    inferred_before.tensor = np.array([[4.0, 40.0, 4]])
    built, failed = await predictor._tensors(SIGNATURE, [inferred_before, jobs[1]])
    assert built is inferred_before.tensor and isinstance(failed, InvalidInput)
