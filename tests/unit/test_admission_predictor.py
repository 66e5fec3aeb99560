"""The API's admission predictor wrapper: its prediction is kept within [0, max_tokens] for every caller (the
request path and the deferred thread), and a failing predictor yields no prediction, counted, never an error."""

from __future__ import annotations

import pytest

from elis.api.deps import AdmissionPredictor


class FixedPredictor:
    """Stands in for the loaded length predictor: a fixed raw prediction and prior score."""

    def __init__(self, tokens: float, fail: bool = False) -> None:
        self.tokens, self.fail = tokens, fail

    def predict(self, items):
        if self.fail:
            raise RuntimeError("encoder exploded")
        return [self.tokens for _ in items]

    def prior_score(self, prompt):
        return (0.5, "f" * 16)


def loaded(predictor) -> AdmissionPredictor:
    admission = AdmissionPredictor(None)
    admission._predictor = predictor
    return admission


@pytest.mark.parametrize(("raw", "max_tokens", "expected"), [(900.0, 256, 256.0), (-3.0, 256, 0.0), (80.0, 256, 80.0),
                                                              (900.0, None, 900.0)])
def test_the_prediction_is_clipped_to_what_max_tokens_allows(raw, max_tokens, expected):
    prediction = loaded(FixedPredictor(raw)).predict("a prompt", max_tokens)
    assert prediction.tokens == expected and prediction.prior_score == 0.5


def test_a_failing_predictor_gives_no_prediction_and_is_counted():
    admission = loaded(FixedPredictor(1.0, fail=True))
    assert admission.predict("a prompt", 64) is None and admission.failures == 1
