import numpy as np
from hypothesis import given
from hypothesis import strategies as st
import pytest

from services.common.errors import InvalidInput, MissingFeatures
from services.common.schemas import Signature, SignatureInput
from services.gateway.tensors import build_tensor, entity_rows
from tests.gateway.factories import signature

FEATURES = {"user_stats:avg_amount_30d": [50.0, 80.0], "user_stats:txn_count_7d": [3, 9]}
INSTANCES = [{"user_id": 1, "amount": 10.5}, {"user_id": 2, "amount": 20}]


def test_columns_follow_signature_order():
    tensor = build_tensor(signature(), INSTANCES, FEATURES)
    assert tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor, np.array([[10.5, 50.0, 3], [20, 80.0, 9]], dtype=np.float32))


def test_reordered_signature_reorders_columns():
    reordered = Signature(inputs=list(reversed(signature().inputs)), entities=["user_id"])
    tensor = build_tensor(reordered, INSTANCES, FEATURES)
    np.testing.assert_array_equal(tensor[0], np.array([3, 50.0, 10.5], dtype=np.float32))


def test_missing_values_take_declared_defaults():
    features = {"user_stats:avg_amount_30d": [None, 80.0], "user_stats:txn_count_7d": [3, 9]}
    tensor = build_tensor(signature(amount_default=-1, avg_default=0.5), [{"user_id": 1}, INSTANCES[1]], features)
    np.testing.assert_array_equal(tensor[0], np.array([-1, 0.5, 3], dtype=np.float32))


def test_missing_features_without_default_name_features_and_entity():
    features = {"user_stats:avg_amount_30d": [50.0, None], "user_stats:txn_count_7d": [3, None]}
    with pytest.raises(MissingFeatures) as caught:
        build_tensor(signature(), INSTANCES, features)
    assert caught.value.status == 422
    assert caught.value.extra["missing"] == [
        {"instance": 1, "entity": {"user_id": 2}, "features": ["user_stats:avg_amount_30d", "user_stats:txn_count_7d"]}
    ]
    assert "user_id=2" in caught.value.detail


def test_missing_request_field_names_it():
    with pytest.raises(InvalidInput) as caught:
        build_tensor(signature(), [{"user_id": 1}, INSTANCES[1]], FEATURES)
    assert caught.value.extra == {"field": "amount", "instance_index": 0}
    assert "'amount' is missing" in caught.value.detail
    with pytest.raises(InvalidInput) as null:
        build_tensor(signature(), [{"user_id": 1, "amount": None}, INSTANCES[1]], FEATURES)
    assert "'amount' is null" in null.value.detail, "a null value was reported as a field the instance lacks"


@pytest.mark.parametrize("bad", ["12", True, float("nan"), float("inf"), [1], {"a": 1}, 1e39, -(10**400)])
def test_non_numeric_or_non_finite_values_are_refused(bad):
    with pytest.raises(InvalidInput) as caught:
        build_tensor(signature(), [{"user_id": 1, "amount": bad}, INSTANCES[1]], FEATURES)
    assert caught.value.extra["field"] == "amount"


def test_entity_rows_read_join_keys():
    assert entity_rows(signature(), INSTANCES) == [{"user_id": 1}, {"user_id": 2}]


@pytest.mark.parametrize("instance", [{"amount": 1.0}, {"user_id": None}, {"user_id": 1.5}, {"user_id": True}])
def test_entity_rows_refuse_missing_or_wrongly_typed_keys(instance):
    with pytest.raises(InvalidInput) as caught:
        entity_rows(signature(), [instance])
    assert caught.value.extra["field"] == "user_id"


def test_request_only_signature_needs_no_features():
    only_request = Signature(inputs=[SignatureInput(name="b", source="request"), SignatureInput(name="a", source="request")])
    tensor = build_tensor(only_request, [{"a": 1, "b": 2}], {})
    np.testing.assert_array_equal(tensor, np.array([[2, 1]], dtype=np.float32))


numbers = st.one_of(st.integers(min_value=-(2**53), max_value=2**53),
                    st.floats(allow_nan=False, allow_infinity=False, min_value=-3e38, max_value=3e38))


@given(st.lists(st.tuples(st.one_of(st.none(), numbers), st.one_of(st.none(), numbers), numbers),
                min_size=1, max_size=40))
def test_every_cell_is_its_value_or_its_default_whichever_path_builds_the_column(rows):
    """Columns of plain finite numbers are built in one pass, others value by value; both give the same cells."""
    instances = [{"user_id": i, "amount": amount} for i, (amount, _, _) in enumerate(rows)]
    features = {"user_stats:avg_amount_30d": [avg for _, avg, _ in rows],
                "user_stats:txn_count_7d": [count for _, _, count in rows]}
    tensor = build_tensor(signature(amount_default=-1.0, avg_default=0.5), instances, features)
    expected = [[-1.0 if a is None else a, 0.5 if v is None else v, c] for a, v, c in rows]
    np.testing.assert_array_equal(tensor, np.array(expected, dtype=np.float64).astype(np.float32))


def test_a_stored_feature_beyond_fp32_is_refused_not_sent_to_the_model_as_infinity():
    features = {name: list(values) for name, values in FEATURES.items()}
    features["user_stats:avg_amount_30d"][1] = 1e39  # pushed to the online store: a float64 FP32 cannot hold
    with pytest.raises(InvalidInput) as caught:
        build_tensor(signature(), INSTANCES, features)
    assert caught.value.extra == {"field": "avg_amount_30d", "instance_index": 1}
    assert "beyond the model's FP32 inputs" in caught.value.detail
