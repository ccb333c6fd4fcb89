"""A model is registered only as it scores: an estimator whose ONNX conversion scores differently, or a frame whose
columns are not the ones the estimator was fitted on, in that order, is refused before anything is uploaded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from mlfleet.client.errors import PackagingError
from mlfleet.client.packaging import package_version


@pytest.fixture(scope="module")
def frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    data = pd.DataFrame({"amount": rng.normal(size=600), "hour": rng.integers(0, 24, 600).astype(float),
                         "segment": rng.integers(0, 6, 600).astype(float)})
    labels = ((data["amount"] > 0) ^ data["segment"].isin([1, 4])).astype(int).to_numpy()
    return data, labels


def test_a_faithful_conversion_is_packaged_with_metrics_from_the_onnx_model(frame):
    data, labels = frame
    model = LogisticRegression().fit(data, labels)
    upload = package_version(model, data, labels=labels)
    assert upload.metadata.signature.input_names == ["amount", "hour", "segment"]
    assert 0.0 <= upload.metadata.metrics["accuracy"] <= 1.0


def test_native_categorical_features_that_skl2onnx_ignores_are_refused(frame):
    data, labels = frame
    model = HistGradientBoostingClassifier(categorical_features=[2], max_iter=30, random_state=0).fit(data, labels)
    with pytest.raises(PackagingError, match="scores .* differently from the estimator"):
        package_version(model, data, labels=labels)


def test_columns_in_another_order_than_the_fit_are_refused(frame):
    data, labels = frame
    model = LogisticRegression().fit(data, labels)
    with pytest.raises(PackagingError, match="not the columns the model was fitted on"):
        package_version(model, data[["hour", "amount", "segment"]], labels=labels)
    with pytest.raises(PackagingError, match="not the columns the model was fitted on"):
        package_version(model, data.assign(extra=1.0), labels=labels)


def test_an_estimator_fitted_on_an_array_is_checked_by_position(frame):
    data, labels = frame
    model = LogisticRegression().fit(data.to_numpy(), labels)
    assert package_version(model, data, labels=labels).metadata.signature.input_names == ["amount", "hour", "segment"]
    with pytest.raises(PackagingError, match="fitted on 3 inputs"):
        package_version(model, data.assign(extra=1.0), labels=labels)


def test_labels_in_a_series_apart_from_the_frames_index_are_refused_not_guessed(frame):
    """scikit-learn's fit pairs rows by position, pandas by index: a Series whose index is not the frame's could mean
    either, and guessing wrong scores the model on scrambled labels."""
    data, labels = frame
    model = LogisticRegression().fit(data, labels)
    assert package_version(model, data, labels=pd.Series(labels, index=data.index)).metadata.metrics == \
        package_version(model, data, labels=labels).metadata.metrics
    with pytest.raises(PackagingError, match="index is not the frame's"):
        package_version(model, data, labels=pd.Series(labels, index=data.index + 10_000))


def test_an_estimator_without_class_probabilities_is_refused_with_what_to_do(frame):
    from sklearn.linear_model import RidgeClassifier

    data, labels = frame
    with pytest.raises(PackagingError, match="CalibratedClassifierCV"):
        package_version(RidgeClassifier().fit(data, labels), data, labels=labels)


def test_a_frame_made_from_an_array_names_its_inputs_by_column_number(frame):
    data, labels = frame
    model = LogisticRegression().fit(data.to_numpy(), labels)
    upload = package_version(model, pd.DataFrame(data.to_numpy()), labels=labels)
    assert upload.metadata.signature.input_names == ["0", "1", "2"]
