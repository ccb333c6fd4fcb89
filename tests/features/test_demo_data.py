"""The synthetic card-fraud data set: deterministic, realistic fraud rate, learnable, shiftable."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlfleet.demo.data import (
    feature_columns,
    generate_dataset,
    label_column,
    latest,
    model_frame,
    request_columns,
    write_offline_source,
)

START = datetime(2026, 1, 5, tzinfo=UTC)
INPUTS = [*request_columns, *(name.split(":", 1)[1] for name in feature_columns)]
SHIFTED = ["amount", "hour_of_day", "is_online", "distance_from_home_km"]
STABLE = [
    "avg_amount_30d",
    "txn_count_7d",
    "account_age_days",
    "chargeback_rate",
    "merchant_risk_score",
    "merchant_fraud_rate_30d",
    "category_code",
]


@pytest.fixture(scope="module")
def before():
    return generate_dataset(start=START)


@pytest.fixture(scope="module")
def after():
    return generate_dataset(start=START, shift=True)


def _holdout(frame: pd.DataFrame):
    cut = len(frame) * 7 // 10
    x, y = frame[INPUTS].to_numpy(float), frame[label_column].to_numpy()
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _logistic(x, y):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)


def test_same_seed_same_data_and_other_seed_differs(before):
    again = generate_dataset(start=START)
    other = generate_dataset(start=START, seed=8)
    for name in ("users", "merchants", "transactions"):
        pd.testing.assert_frame_equal(getattr(before, name), getattr(again, name))
    assert not before.transactions["amount"].equals(other.transactions["amount"])


def test_tables_have_the_documented_columns_and_types(before):
    assert list(before.users.columns) == [
        "user_id",
        "event_timestamp",
        "created_timestamp",
        "avg_amount_30d",
        "txn_count_7d",
        "account_age_days",
        "chargeback_rate",
    ]
    assert list(before.merchants.columns) == [
        "merchant_id",
        "event_timestamp",
        "created_timestamp",
        "merchant_risk_score",
        "merchant_fraud_rate_30d",
        "category_code",
    ]
    assert list(before.transactions.columns) == [
        "transaction_id",
        "user_id",
        "merchant_id",
        "event_timestamp",
        *request_columns,
        label_column,
    ]
    assert before.users["user_id"].dtype == np.int64
    assert str(before.users["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert set(before.transactions["is_online"].unique()) == {0, 1}
    assert before.transactions["transaction_id"].is_unique
    assert len(before.transactions) == 50_000
    assert (
        before.transactions["hour_of_day"] == before.transactions["event_timestamp"].dt.hour
    ).all()


def test_latest_snapshots_precede_every_transaction(before):
    users = latest(before.users, "user_id")
    assert len(users) == 2000 and len(before.users) == 4000
    assert users["event_timestamp"].max() < before.transactions["event_timestamp"].min()
    assert before.transactions["event_timestamp"].min() >= pd.Timestamp(START)


@pytest.mark.parametrize("shift", [False, True])
def test_fraud_rate_is_realistic(shift):
    rate = generate_dataset(start=START, shift=shift).transactions[label_column].mean()
    assert 0.02 <= rate <= 0.05


def test_logistic_regression_and_boosting_learn_the_fraud(before):
    x_train, y_train, x_test, y_test = _holdout(model_frame(before))
    logistic = _logistic(x_train, y_train).predict_proba(x_test)[:, 1]
    boosting = (
        HistGradientBoostingClassifier(random_state=0).fit(x_train, y_train).predict_proba(x_test)[:, 1]
    )
    assert roc_auc_score(y_test, logistic) > 0.93
    assert accuracy_score(y_test, logistic > 0.5) > 0.85
    assert roc_auc_score(y_test, boosting) >= roc_auc_score(y_test, logistic)


def test_shift_moves_request_fields_and_keeps_entity_features(before, after):
    old, new = model_frame(before), model_frame(after)
    for name in SHIFTED:
        assert ks_2samp(old[name], new[name]).statistic > 0.15, name
    for name in STABLE:
        assert ks_2samp(old[name], new[name]).statistic < 0.05, name
    assert new["is_online"].mean() > old["is_online"].mean() + 0.2


def test_old_model_misses_the_new_fraud(before, after):
    x_train, y_train, x_test, y_test = _holdout(model_frame(before))
    model = _logistic(x_train, y_train)
    shifted = model_frame(after)
    auc_before = roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
    auc_after = roc_auc_score(
        shifted[label_column], model.predict_proba(shifted[INPUTS].to_numpy(float))[:, 1]
    )
    assert auc_after < auc_before - 0.15


def test_write_offline_source_round_trips(before, tmp_path):
    paths = write_offline_source(before, tmp_path / "data")
    assert sorted(paths) == ["merchants", "transactions", "users"]
    assert paths["users"] == tmp_path / "data" / "users.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(paths["users"]), before.users)
    pd.testing.assert_frame_equal(pd.read_parquet(paths["transactions"]), before.transactions)


def test_default_start_puts_the_window_in_the_past():
    dataset = generate_dataset(n_users=10, n_merchants=5, n_transactions=100)
    assert dataset.transactions["event_timestamp"].max() <= pd.Timestamp.now(tz="UTC")


def test_rejects_empty_populations():
    with pytest.raises(ValueError):
        generate_dataset(n_users=0)
