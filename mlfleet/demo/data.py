"""A synthetic card-fraud data set shaped like the case study in DESIGN.md.

Three tables: ``users`` and ``merchants`` are the Feast offline sources (two snapshots per
entity, the latest one valid for every transaction) and ``transactions`` holds what arrives
with a payment request plus the ``is_fraud`` label.

Fraud is generated as a story, not a formula: an entity-level prior (chargeback history, new
accounts, risky merchants) decides whether a payment is fraudulent, then the request fields are
drawn from the legitimate or the fraudulent pattern (much larger than the user's usual amount,
at night, online, far from home). ``shift=True`` replays 2020: shopping moves online and close
to home, baskets grow, hours spread out, and half the fraud becomes small daytime online
"card testing" at low-risk merchants, which a model trained on the old patterns misses. The
entity tables do not change with ``shift`` — the same people and shops, behaving differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

request_columns: tuple[str, ...] = ("amount", "hour_of_day", "is_online", "distance_from_home_km")
"""Transaction fields the caller sends with each prediction request, in model-input order."""

feature_columns: tuple[str, ...] = (
    "user_stats:avg_amount_30d",
    "user_stats:txn_count_7d",
    "user_stats:account_age_days",
    "user_stats:chargeback_rate",
    "merchant_stats:merchant_risk_score",
    "merchant_stats:merchant_fraud_rate_30d",
    "merchant_stats:category_code",
)
"""Feast features (``view:field``) the demo model reads, in input order after the request fields."""

entity_columns: tuple[str, ...] = ("user_id", "merchant_id")
"""Join keys each request carries for the feature lookups."""

label_column = "is_fraud"

WINDOW = timedelta(days=7)
"""Transactions span ``[start, start + WINDOW)``; the latest entity snapshots precede ``start``."""

SNAPSHOT_INTERVAL = timedelta(days=7)
"""How much older an entity's previous snapshot is than its latest one."""

CATEGORIES = (
    "grocery",
    "fuel",
    "restaurant",
    "retail",
    "online_retail",
    "electronics",
    "travel",
    "jewelry",
    "digital_goods",
    "gambling",
)
"""Merchant categories; ``category_code`` is the index into this tuple."""

_CATEGORY_WEIGHT = np.array([0.22, 0.12, 0.16, 0.14, 0.12, 0.07, 0.06, 0.03, 0.05, 0.03])
_CATEGORY_RISK = np.array([0.10, 0.15, 0.12, 0.25, 0.45, 0.55, 0.40, 0.70, 0.75, 0.80])
_CATEGORY_ONLINE = np.array([0.05, 0.0, 0.10, 0.20, 0.95, 0.50, 0.60, 0.25, 0.98, 0.85])


@dataclass(frozen=True)
class FraudDataset:
    users: pd.DataFrame
    merchants: pd.DataFrame
    transactions: pd.DataFrame
    seed: int
    shift: bool
    start: datetime


def generate_dataset(
    *,
    seed: int = 7,
    n_users: int = 2000,
    n_merchants: int = 300,
    n_transactions: int = 50_000,
    shift: bool = False,
    start: datetime | None = None,
) -> FraudDataset:
    """The data set for ``seed``; identical for identical arguments.

    ``start`` (UTC) begins the transaction window; by default it is ``WINDOW`` before the
    current hour, so the newest transaction is in the past and every snapshot is recent.
    """
    if min(n_users, n_merchants, n_transactions) < 1:
        raise ValueError("n_users, n_merchants and n_transactions must be positive")
    start = _utc(start) if start is not None else _current_hour() - WINDOW
    users = _users(np.random.default_rng([seed, 1]), n_users, start)
    merchants = _merchants(np.random.default_rng([seed, 2]), n_merchants, start)
    rng = np.random.default_rng([seed, 3, int(shift)])
    transactions = _transactions(
        rng,
        latest(users, "user_id"),
        latest(merchants, "merchant_id"),
        n_transactions,
        shift,
        start,
    )
    return FraudDataset(users, merchants, transactions, seed, shift, start)


def latest(snapshots: pd.DataFrame, key: str) -> pd.DataFrame:
    """The newest snapshot of each entity, indexed by ``key``."""
    return snapshots.sort_values("event_timestamp").groupby(key).tail(1).set_index(key).sort_index()


def model_frame(dataset: FraudDataset) -> pd.DataFrame:
    """Transactions joined with the latest entity features: keys, request, features, label."""
    users = latest(dataset.users, "user_id")
    merchants = latest(dataset.merchants, "merchant_id")
    fields = [name.split(":", 1)[1] for name in feature_columns]
    frame = dataset.transactions.join(users, on="user_id", rsuffix="_user").join(
        merchants, on="merchant_id", rsuffix="_merchant"
    )
    return frame[[*entity_columns, *request_columns, *fields, label_column]].reset_index(drop=True)


def write_offline_source(dataset: FraudDataset, data_dir: Path) -> dict[str, Path]:
    """Write ``users``, ``merchants`` and ``transactions`` as parquet files under ``data_dir``."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("users", "merchants", "transactions"):
        paths[name] = data_dir / f"{name}.parquet"
        getattr(dataset, name).to_parquet(paths[name], index=False)
    return paths


def _users(rng: np.random.Generator, n: int, start: datetime) -> pd.DataFrame:
    avg_amount = np.round(np.exp(rng.normal(np.log(55.0), 0.6, n)), 2)
    new_account = rng.random(n) < 0.08
    account_age = np.where(
        new_account, rng.integers(1, 30, n), 30 + rng.gamma(2.0, 400.0, n)
    ).astype(np.int64)
    chargeback_rate = np.round(rng.beta(0.6, 40.0, n), 4)
    txn_count = rng.poisson(rng.gamma(3.0, 3.0, n)).astype(np.int64)
    current = pd.DataFrame(
        {
            "user_id": np.arange(1, n + 1, dtype=np.int64),
            "event_timestamp": _snapshot_times(rng, n, start),
            "avg_amount_30d": avg_amount,
            "txn_count_7d": txn_count,
            "account_age_days": account_age,
            "chargeback_rate": chargeback_rate,
        }
    )
    previous = current.assign(
        event_timestamp=current["event_timestamp"] - SNAPSHOT_INTERVAL,
        avg_amount_30d=np.round(avg_amount * rng.lognormal(0.0, 0.15, n), 2),
        txn_count_7d=rng.poisson(np.maximum(txn_count, 1)).astype(np.int64),
        account_age_days=np.maximum(account_age - SNAPSHOT_INTERVAL.days, 0),
        chargeback_rate=np.round(chargeback_rate * rng.uniform(0.5, 1.0, n), 4),
    )
    return _with_created(pd.concat([previous, current], ignore_index=True))


def _merchants(rng: np.random.Generator, n: int, start: datetime) -> pd.DataFrame:
    category = rng.choice(len(CATEGORIES), size=n, p=_CATEGORY_WEIGHT).astype(np.int64)
    risk = np.clip(_CATEGORY_RISK[category] + rng.normal(0.0, 0.12, n), 0.01, 0.99)
    fraud_rate = np.round(np.clip(0.06 * risk**2 + rng.normal(0.0, 0.004, n), 0.0, 1.0), 4)
    current = pd.DataFrame(
        {
            "merchant_id": np.arange(1, n + 1, dtype=np.int64),
            "event_timestamp": _snapshot_times(rng, n, start),
            "merchant_risk_score": np.round(risk, 4),
            "merchant_fraud_rate_30d": fraud_rate,
            "category_code": category,
        }
    )
    previous = current.assign(
        event_timestamp=current["event_timestamp"] - SNAPSHOT_INTERVAL,
        merchant_risk_score=np.round(np.clip(risk + rng.normal(0.0, 0.05, n), 0.01, 0.99), 4),
        merchant_fraud_rate_30d=np.round(fraud_rate * rng.uniform(0.6, 1.4, n), 4),
    )
    return _with_created(pd.concat([previous, current], ignore_index=True))


def _transactions(
    rng: np.random.Generator,
    users: pd.DataFrame,
    merchants: pd.DataFrame,
    n: int,
    shift: bool,
    start: datetime,
) -> pd.DataFrame:
    user_id = rng.choice(users.index.to_numpy(), size=n, p=_normalised(users["txn_count_7d"] + 1.0))
    merchant_id = rng.choice(
        merchants.index.to_numpy(),
        size=n,
        p=_normalised(1.0 / np.arange(1, len(merchants) + 1) ** 0.8),
    )
    user = users.loc[user_id]
    merchant = merchants.loc[merchant_id]
    fraud = rng.random(n) < _fraud_prior(user, merchant, shift)
    card_testing = fraud & shift & (rng.random(n) < 0.5)
    classic = fraud & ~card_testing
    legit = ~fraud
    category = merchant["category_code"].to_numpy()

    online_share = _CATEGORY_ONLINE[category]
    if shift:
        online_share = np.where(online_share > 0, np.minimum(online_share + 0.5, 0.98), 0.0)
    is_online = np.where(
        legit, rng.random(n) < online_share, np.where(classic, rng.random(n) < 0.7, True)
    ).astype(np.int64)

    usual = user["avg_amount_30d"].to_numpy()
    amount = usual * np.where(
        legit,
        rng.lognormal(0.45 if shift else 0.0, 0.45, n),
        np.where(classic, rng.lognormal(1.0, 0.6, n), rng.lognormal(-1.2, 0.4, n)),
    )

    legit_hour = rng.normal(18.0, 5.0, n) if shift else rng.normal(14.0, 3.5, n)
    fraud_hour = np.where(rng.random(n) < 0.5, rng.uniform(0, 5, n), rng.uniform(0, 24, n))
    hour = np.where(legit, legit_hour, np.where(classic, fraud_hour, rng.normal(13.0, 3.0, n)))
    hour = np.floor(hour).astype(np.int64) % 24

    legit_distance = np.where(
        is_online == 1,
        rng.exponential(3.0 if shift else 25.0, n),
        rng.exponential(2.0 if shift else 8.0, n),
    )
    distance = np.where(
        legit,
        legit_distance,
        np.where(classic, rng.lognormal(np.log(60.0), 1.2, n), rng.exponential(4.0, n)),
    )

    day = rng.integers(0, WINDOW.days, n)
    second = rng.integers(0, 3600, n)
    timestamp = pd.Timestamp(start) + pd.to_timedelta(day * 86_400 + hour * 3600 + second, unit="s")
    frame = pd.DataFrame(
        {
            "user_id": user_id.astype(np.int64),
            "merchant_id": merchant_id.astype(np.int64),
            "event_timestamp": timestamp,
            "amount": np.round(np.maximum(amount, 0.5), 2),
            "hour_of_day": hour,
            "is_online": is_online,
            "distance_from_home_km": np.round(distance, 2),
            label_column: fraud.astype(np.int64),
        }
    ).sort_values("event_timestamp", kind="stable", ignore_index=True)
    frame.insert(0, "transaction_id", np.arange(1, n + 1, dtype=np.int64))
    return frame


def _fraud_prior(user: pd.DataFrame, merchant: pd.DataFrame, shift: bool) -> np.ndarray:
    """Entity-level odds that a payment is fraudulent: history, account age, merchant risk."""
    logit = (
        -5.6
        + 25.0 * user["chargeback_rate"].to_numpy()
        + 1.6 * (user["account_age_days"].to_numpy() < 30)
        + 3.2 * merchant["merchant_risk_score"].to_numpy()
    )
    if shift:
        logit = logit + 0.4
    return 1.0 / (1.0 + np.exp(-logit))


def _snapshot_times(rng: np.random.Generator, n: int, start: datetime) -> pd.Series:
    """Latest snapshot of each entity: within the day before ``start``, to the second."""
    seconds = rng.integers(1, 86_400, n)
    return pd.Series(pd.Timestamp(start) - pd.to_timedelta(seconds, unit="s"))


def _with_created(frame: pd.DataFrame) -> pd.DataFrame:
    frame.insert(2, "created_timestamp", frame["event_timestamp"] + timedelta(minutes=5))
    return frame


def _normalised(weights) -> np.ndarray:
    weights = np.asarray(weights, dtype=float)
    return weights / weights.sum()


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _current_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
