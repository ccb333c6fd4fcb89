from hypothesis import given
from hypothesis import strategies as st

from services.registry.gates import gate_failures
from services.registry.schemas import Gates


def test_passing_metrics_give_no_reasons():
    assert gate_failures(Gates(), {"auc": 0.95, "accuracy": 0.9}) == []


def test_metrics_equal_to_the_gate_pass():
    assert gate_failures(Gates(min_auc=0.9, min_accuracy=0.85), {"auc": 0.9, "accuracy": 0.85}) == []


def test_weak_auc_is_reported_with_value_and_threshold():
    assert gate_failures(Gates(), {"auc": 0.71, "accuracy": 0.9}) == ["auc 0.71 < min_auc 0.90"]


def test_every_failing_gate_is_reported():
    assert gate_failures(Gates(), {"auc": 0.5, "accuracy": 0.6}) == [
        "auc 0.50 < min_auc 0.90",
        "accuracy 0.60 < min_accuracy 0.85",
    ]


def test_a_near_miss_is_not_rounded_into_a_pass():
    assert gate_failures(Gates(min_accuracy=None), {"auc": 0.8999}) == ["auc 0.8999 < min_auc 0.90"]


def test_a_missing_metric_fails_the_gate_that_needs_it():
    assert gate_failures(Gates(), {"auc": 0.95}) == ["accuracy missing, required by min_accuracy 0.85"]


def test_a_switched_off_gate_needs_no_metric():
    assert gate_failures(Gates(min_auc=None, min_accuracy=None), {}) == []


unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(threshold=unit, value=unit)
def test_a_version_fails_exactly_when_below_the_threshold(threshold, value):
    reasons = gate_failures(Gates(min_auc=threshold, min_accuracy=None), {"auc": value})
    assert bool(reasons) == (value < threshold)
