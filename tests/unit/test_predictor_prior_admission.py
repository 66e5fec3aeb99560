"""The evaluation variant that admits by the prompt prior alone (experiments.admission_from_prior)."""

from __future__ import annotations

import numpy as np

from elis.predictor.evaluation import kendall_tau_b
from elis.predictor.experiments import admission_from_prior
from elis.predictor.features import Example
from elis.predictor.training import Arrays


def _arrays(rng, n: int, max_tokens: int = 400) -> Arrays:
    """Half admissions (step 0), half later steps; the last input column is a prior score that ranks the
    admissions' true remaining tokens (with noise), the other column is noise."""
    examples, rows = [], []
    for i in range(n):
        step = i % 2
        remaining = int(rng.integers(5, 380))
        examples.append(Example(f"r{i}", "p", "", step * 50, step, remaining, max_tokens=max_tokens))
        rows.append([rng.normal(), np.log1p(remaining) + rng.normal(0, 0.3)])
    return Arrays.of(np.array(rows, dtype=np.float32), examples)


def test_admissions_follow_the_prior_on_the_tokens_scale_and_later_steps_are_untouched():
    rng = np.random.default_rng(0)
    val, test = _arrays(rng, 400), _arrays(rng, 200)
    predicted = rng.uniform(0, 400, len(test))  # a ranker that ranks nothing
    admitted = admission_from_prior(val, test, predicted)
    first = test.step == 0
    assert np.array_equal(admitted[~first], predicted[~first])
    assert kendall_tau_b(admitted[first], test.y[first]) > 0.6 > abs(kendall_tau_b(predicted[first], test.y[first]))
    # calibrated to tokens (the validation admissions' scale), within the job's max_tokens
    assert 0.5 < admitted[first].mean() / test.y[first].mean() < 1.5
    assert admitted.max() <= 400
