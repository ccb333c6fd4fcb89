import numpy as np
import pytest

from services.common.errors import InferenceFailed
from services.common.schemas import SignatureOutput
from services.gateway.postprocess import to_predictions


def test_score_is_positive_class_probability_and_label_the_argmax_class():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    predictions = to_predictions(SignatureOutput(), probabilities)
    assert [p.label for p in predictions] == [0, 1]
    assert [p.score for p in predictions] == pytest.approx([0.1, 0.8])
    assert predictions[1].probabilities == pytest.approx([0.2, 0.8])


def test_classes_and_positive_index_come_from_the_signature():
    output = SignatureOutput(classes=["fraud", "legit", "review"], positive_class_index=0)
    predictions = to_predictions(output, np.array([[0.3, 0.2, 0.5]], dtype=np.float32))
    assert predictions[0].label == "review"
    assert predictions[0].score == pytest.approx(0.3)


@pytest.mark.parametrize("shape", [(2,), (1, 3)])
def test_probabilities_that_do_not_match_the_classes_fail(shape):
    with pytest.raises(InferenceFailed):
        to_predictions(SignatureOutput(), np.zeros(shape, dtype=np.float32))
