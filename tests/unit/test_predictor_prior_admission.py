"""Admission by the prompt prior: each job's admission prediction is the prior's score alone, mapped to tokens
by an isotonic fit on the validation admissions; the re-predictions stay the head's (ranker.Ranker)."""

from __future__ import annotations

import numpy as np
import pytest

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
    assert by_prior[first].max() <= 400  # the admissions too are capped at max_tokens


def test_by_default_the_prior_tunes_four_layers_and_admits_and_its_calibration_is_monotone():
    assert RankerConfig().admit_by_prior and RankerConfig().prior_layers == 4
    rng = np.random.default_rng(1)
    calibration = fit_admission_calibration(_arrays(rng, 100))
    tokens = calibration.apply(np.array([1.0, 3.0, 5.5]), np.zeros(3, dtype=np.int64))
    assert tokens[0] <= tokens[1] <= tokens[2]  # monotone in the prior's score


@pytest.mark.slow
def test_the_served_ranker_admits_by_the_prior_and_an_older_checkpoint_by_its_head():
    """The shipped checkpoint: an admission (nothing generated yet) is the prior's calibrated score, exactly as
    ranker.Ranker predicts it; a re-prediction, also one after a window shorter than the checkpoint's, is the
    head's. The same checkpoint without the admission calibration (an older one) admits by its head."""
    from dataclasses import replace

    from elis.predictor.calibration import StepCalibration
    from elis.predictor.checkpoint import load_checkpoint
    from elis.predictor.encoder import load_encoder
    from elis.predictor.features import PredictionInput, prompt_head
    from elis.predictor.ranker import admission_tokens
    from elis.predictor.serving import LengthPredictor, default_checkpoint_path

    checkpoint = load_checkpoint(default_checkpoint_path())
    # since 2026-12-07 the shipped prior reads the served model's own states (docs/predictor.md)
    assert checkpoint.metadata["admission_calibration"] and checkpoint.metadata["prompt_prior"]["backbone"] == \
        "served-model" and checkpoint.metadata["ranker_config"]["prior_encoder"] == "served-model"
    encoder = load_encoder(checkpoint.metadata["encoder"])
    served = LengthPredictor(encoder, checkpoint)
    older = LengthPredictor(encoder, replace(checkpoint, metadata={
        k: v for k, v in checkpoint.metadata.items() if k != "admission_calibration"}))
    prompts = ["Write a detailed essay on the history of Rome.", "What is 2+2? Answer with one number.",
               "List three colors.", "Explain how a compiler works, step by step, with examples."]
    admissions = [PredictionInput(p, max_tokens=4096) for p in prompts]
    heads = [prompt_head(encoder.tokenizer, p, encoder.max_length) for p in prompts]
    calibration = StepCalibration.from_json(checkpoint.metadata["admission_calibration"])
    expected = admission_tokens(calibration, served._prior.score(heads))
    np.testing.assert_allclose(served.predict(admissions), expected, rtol=1e-5)
    assert not np.allclose(older.predict(admissions), expected, rtol=1e-3)
    later = [PredictionInput(p, "Here is the answer, part one. ", n, max_tokens=4096)
             for p, n in zip(prompts, (25, 50, 100, 25))]
    np.testing.assert_allclose(served.predict(later), older.predict(later), rtol=1e-6)


def test_an_older_checkpoint_keeps_the_config_it_was_trained_with():
    """Fields added later (admission by the prior, four prior layers) are not read into an older checkpoint as
    today's defaults, so an update does not record a config it never had."""
    from elis.predictor.checkpoint import Checkpoint
    from elis.predictor.online import ranker_of

    old = Checkpoint(head=None, metadata={"kind": "ranker", "ranker_config": {"use_prompt_prior": True},
                                          "prompt_prior": {"top_layers": 2}})
    config = ranker_of(old).config
    assert config.use_prompt_prior and not config.admit_by_prior and config.prior_layers == 2
    assert ranker_of(old).admission is None
    assert ranker_of(old).config.prior_encoder == "minilm"  # what every prior read before 2026-12-07
    new = Checkpoint(head=None, metadata={"kind": "ranker", "ranker_config": {"use_prompt_prior": True,
                                                                              "admit_by_prior": True,
                                                                              "prior_layers": 4}})
    assert ranker_of(new).config.admit_by_prior and ranker_of(new).config.prior_layers == 4


def test_the_cli_trains_and_evaluates_with_the_shipped_number_of_prior_layers():
    from elis.predictor.cli import DEFAULT_PRIOR_LAYERS
    from elis.predictor.prompt_prior import prior_config

    assert DEFAULT_PRIOR_LAYERS == RankerConfig().prior_layers == prior_config().top_layers == 4
