"""Admission by the prompt prior: each job's admission prediction is the prior's score alone, mapped to tokens
by an isotonic fit on the validation admissions; the re-predictions stay the head's (ranker.Ranker)."""

from __future__ import annotations

import numpy as np

from elis.predictor import ranker as ranker_module
from elis.predictor.evaluation import kendall_tau_b
from elis.predictor.features import Example
from elis.predictor.ranker import Ranker, RankerConfig, fit_admission_calibration
from elis.predictor.training import Arrays


def _arrays(rng, n: int, max_tokens: int = 400) -> Arrays:
    """Half admissions (step 0), half later steps; the last input column is a prior score that ranks the
    true remaining tokens (with noise), the other column is noise."""
    examples, rows = [], []
    for i in range(n):
        step = i % 2
        remaining = int(rng.integers(5, 380))
        examples.append(Example(f"r{i}", "p", "", step * 50, step, remaining, max_tokens=max_tokens))
        rows.append([rng.normal(), np.log1p(remaining) + rng.normal(0, 0.3)])
    return Arrays.of(np.array(rows, dtype=np.float32), examples)


def test_admissions_follow_the_prior_on_the_tokens_scale_and_later_steps_stay_the_heads(monkeypatch):
    rng = np.random.default_rng(0)
    val, test = _arrays(rng, 400), _arrays(rng, 200)
    head_scores = rng.normal(0, 1, len(test))  # a head that ranks nothing
    monkeypatch.setattr(ranker_module, "score_array", lambda head, x: head_scores[: len(x)])
    config = RankerConfig(use_prompt_prior=True, calibrate=False)
    by_head = Ranker(head=None, config=config, calibration=None).predict(test)
    admission = fit_admission_calibration(val)
    by_prior = Ranker(head=None, config=config, calibration=None, admission=admission).predict(test)
    first = test.step == 0
    assert np.array_equal(by_prior[~first], by_head[~first])
    assert kendall_tau_b(by_prior[first], test.y[first]) > 0.6 > abs(kendall_tau_b(by_head[first], test.y[first]))
    # calibrated to tokens (the validation admissions' scale), within the job's max_tokens
    assert 0.8 < by_prior[first].mean() / test.y[first].mean() < 1.25
    assert by_prior.max() <= 400


def test_by_default_the_prior_tunes_four_layers_and_admits_and_its_calibration_is_monotone():
    assert RankerConfig().admit_by_prior and RankerConfig().prior_layers == 4
    rng = np.random.default_rng(1)
    calibration = fit_admission_calibration(_arrays(rng, 100))
    tokens = calibration.apply(np.array([1.0, 3.0, 5.5]), np.zeros(3, dtype=np.int64))
    assert tokens[0] <= tokens[1] <= tokens[2]  # monotone in the prior's score
