"""The prompt prior: a ranker input column, stored inside the checkpoint, served with one encoder pass per prompt."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from elis.predictor.checkpoint import CheckpointError, build_head, load_checkpoint, save_checkpoint
from elis.predictor.fakes import FakeTokenizer, fake_record
from elis.predictor.features import PredictionInput
from elis.predictor.ranker import RankerConfig, arrays_of, ranker_inputs

_HEAD = {"input_dim": 2, "hidden": 4, "num_layers": 1}  # any small head: these tests are about the prior


def test_the_prior_is_the_last_column_and_each_distinct_prompt_is_scored_once():
    items = [PredictionInput("Give one word for jazz."), PredictionInput("Write a long essay on jazz.", "a b", 50),
             PredictionInput("Give one word for jazz.", "x y z", 100)]
    scored: list[list[str]] = []

    def prior_of(texts):
        scored.append(list(texts))
        return np.array([float(len(t)) for t in texts])

    def embed(texts):
        return np.ones((len(texts), 4), dtype=np.float32)

    plain = ranker_inputs(embed, FakeTokenizer(), 64, items, use_tail=False, use_repetition=True)
    with_prior = ranker_inputs(embed, FakeTokenizer(), 64, items, use_tail=False, use_repetition=True, prior_of=prior_of)
    assert with_prior.shape == (3, plain.shape[1] + 1)
    np.testing.assert_array_equal(with_prior[:, :-1], plain)
    assert with_prior[:, -1].tolist() == [23.0, 27.0, 23.0]
    assert scored == [["Give one word for jazz.", "Write a long essay on jazz."]]


def test_a_config_that_uses_the_prior_refuses_to_build_inputs_without_one():
    with pytest.raises(ValueError, match="prompt prior"):
        arrays_of(object(), [], RankerConfig(use_prompt_prior=True))


def test_a_checkpoint_that_names_a_prior_without_its_weights_is_refused(tmp_path: Path):
    meta = {"kind": "elis", "prompt_prior": {"top_layers": 2}, "head": _HEAD}
    path = save_checkpoint(tmp_path / "p.pt", build_head(meta), meta)
    with pytest.raises(CheckpointError, match="prompt prior"):
        load_checkpoint(path)


@pytest.fixture(scope="module")
def encoder():
    from elis.predictor.encoder import load_encoder

    return load_encoder("")


@pytest.fixture(scope="module")
def records():
    rng = random.Random(0)
    return [fake_record(i, rng) for i in range(400)]


@pytest.mark.slow
def test_a_trained_prior_ranks_long_asks_first_and_survives_the_checkpoint(tmp_path: Path, encoder, records):
    from elis.predictor.corpus_eval import split_in_distribution
    from elis.predictor.finetune import FinetuneConfig
    from elis.predictor.prompt_prior import load_prior, train_prompt_prior

    prior = train_prompt_prior(encoder, split_in_distribution(records),
                               FinetuneConfig(top_layers=1, max_epochs=1, frozen_epochs=10, frozen_patience=10))
    long_asks = ["Write a detailed essay about the moon.", "Tell a long story about coffee."]
    short_asks = ["Give one word for the moon.", "Answer yes or no: is coffee blue?"]
    scores = prior.score(long_asks + short_asks)
    assert min(scores[:2]) > max(scores[2:])
    assert prior.metadata()["top_layers"] == 1 and prior.metadata()["val_tau"] > 0.3
    # stored in float16 inside the checkpoint, rebuilt over the bundled encoder: the same scores to fp16 error
    meta = {"kind": "elis", "prompt_prior": prior.metadata(), "head": _HEAD}
    path = save_checkpoint(tmp_path / "c.pt", build_head(meta), meta, prompt_prior=prior.state())
    loaded = load_checkpoint(path)
    assert set(loaded.prompt_prior) == set(prior.state())
    assert all(k.startswith(("layer.5.", "head.")) for k in loaded.prompt_prior)  # only what the encoder lacks
    rebuilt = load_prior(encoder, loaded.metadata["prompt_prior"], loaded.prompt_prior)
    np.testing.assert_allclose(rebuilt.score(long_asks + short_asks), scores, atol=0.02)


@pytest.mark.slow
def test_a_served_ranker_with_a_prior_scores_each_prompt_once_and_updates_keep_the_prior(tmp_path: Path, encoder,
                                                                                          records):
    from dataclasses import replace

    from elis.predictor.online import update_checkpoint
    from elis.predictor.ranker_train import train_ranker_checkpoint
    from elis.predictor.serving import LengthPredictor, prior_fingerprint
    from elis.predictor.training import EmbeddingCache

    cache = EmbeddingCache(encoder, tmp_path / "cache", 96)
    config = RankerConfig(max_epochs=10, use_prompt_prior=True, prior_epochs=1)
    path, metadata = train_ranker_checkpoint(records, tmp_path / "predictor.pt", cache, config, [])
    assert metadata["prompt_prior"]["top_layers"] == config.prior_layers and metadata["use_prompt_prior"]
    assert metadata["admission_calibration"]  # admissions by the prior (admit_by_prior, on by default)
    assert len(metadata["prompt_prior"]["val_tau_by_epoch"]) == 1  # prior_epochs reaches the fine-tuning
    predictor = LengthPredictor(encoder, load_checkpoint(path), path)
    calls = []
    score = predictor._prior.score
    predictor._prior.score = lambda texts: (calls.append(len(texts)), score(texts))[1]
    long_ask, short_ask = "Explain the ocean step by step in depth.", "Name the color of the ocean."
    first = predictor.predict([PredictionInput(long_ask), PredictionInput(short_ask)])
    predictor.predict([PredictionInput(long_ask, "the sea is " * 20, 50)])
    assert first[0] > first[1]
    assert calls == [2]  # at admission only; the re-prediction reads the cached score
    # A worker's predictor (another process) reuses the score the API stored with the job, when their priors
    # match: the same predictions with no pass of the prompt through the prior; a foreign fingerprint is ignored.
    score_at_admission, fingerprint = predictor.prior_score(long_ask)
    assert calls == [2] and fingerprint == prior_fingerprint(load_checkpoint(path))
    worker = LengthPredictor(encoder, load_checkpoint(path), path)
    worker_calls = []
    worker_score = worker._prior.score
    worker._prior.score = lambda texts: (worker_calls.append(len(texts)), worker_score(texts))[1]
    later = PredictionInput(long_ask, "the sea is " * 20, 50)
    carried = worker.predict([replace(later, prior_score=score_at_admission, prior_fingerprint=fingerprint)])
    assert worker_calls == [] and worker.carried_priors == 1
    assert carried == pytest.approx(predictor.predict([later]))
    foreign = worker.predict([replace(later, prompt=short_ask, prior_score=99.0, prior_fingerprint="0" * 16)])
    assert worker_calls == [1] and foreign == pytest.approx(predictor.predict([replace(later, prompt=short_ask)]))
    # an accepted update rewrites the head and calibration, and carries the prior over unchanged
    result = update_checkpoint(path, records[:120], cache, out_path=tmp_path / "v2.pt", min_gain=-1.0)
    assert result.accepted
    before, after = load_checkpoint(path).prompt_prior, load_checkpoint(tmp_path / "v2.pt").prompt_prior
    assert all(torch.equal(before[k], after[k]) for k in before)
    # so scores carried by jobs admitted under version 1 stay valid under version 2
    assert prior_fingerprint(load_checkpoint(tmp_path / "v2.pt")) == fingerprint


@pytest.mark.slow
def test_a_prior_over_the_served_models_states_stores_only_its_head_and_serves_the_same_scores(
        tmp_path: Path, encoder, records):
    from elis.predictor.ranker_train import train_ranker_checkpoint
    from elis.predictor.serving import LengthPredictor
    from elis.predictor.training import EmbeddingCache

    config = RankerConfig(max_epochs=5, use_prompt_prior=True, prior_encoder="served-model")
    path, metadata = train_ranker_checkpoint(records, tmp_path / "predictor.pt",
                                             EmbeddingCache(encoder, tmp_path / "cache", 96), config, [])
    prior_meta = metadata["prompt_prior"]
    assert prior_meta["backbone"] == "served-model" and prior_meta["top_layers"] == 0
    assert prior_meta["val_tau"] > 0.3  # the fake records' long asks are long
    loaded = load_checkpoint(path)
    assert loaded.prompt_prior and all(k.startswith("head.") for k in loaded.prompt_prior)  # no model weights
    predictor = LengthPredictor(encoder, loaded, path)
    long_ask, short_ask = "Write a detailed essay about the moon.", "Give one word for the moon."
    admitted = predictor.predict([PredictionInput(long_ask), PredictionInput(short_ask)])
    assert admitted[0] > admitted[1]


def test_an_unknown_prior_encoder_is_refused_by_name():
    from elis.predictor.prompt_prior import prior_backbone

    assert prior_backbone("minilm") is None
    with pytest.raises(ValueError, match="unknown prior encoder 'gpt'"):
        prior_backbone("gpt")
