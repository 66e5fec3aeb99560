"""The predictor with its real encoder, on the real dataset (elis/data/predictor_dataset.jsonl.gz). Slow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elis.predictor.checkpoint import file_sha256, load_checkpoint
from elis.predictor.cli import DEFAULT_DATASET
from elis.predictor.evaluation import predict_examples
from elis.predictor.features import PredictionInput, flatten
from elis.predictor.serving import SHIPPED_CHECKPOINT, LengthPredictor, load_predictor
from elis.predictor.training import EmbeddingCache, TrainConfig, read_dataset, split_records, train_predictor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encoder():
    from elis.predictor.encoder import load_encoder

    return load_encoder("")


@pytest.fixture(scope="module")
def shipped(encoder) -> LengthPredictor:
    assert SHIPPED_CHECKPOINT.is_file(), "the default checkpoint is missing: see docs/predictor.md"
    return LengthPredictor(encoder, load_checkpoint(SHIPPED_CHECKPOINT), SHIPPED_CHECKPOINT)


def test_a_small_training_run_on_real_examples_beats_the_mean_predictor(tmp_path: Path, encoder):
    # NOTE: 120 prompts (about 580 training examples, 20 validation prompts). With 80 prompts the 5-prompt
    # validation split cannot pick an epoch and the head lost to the mean in one seed of two (measured).
    num_records = 120
    config = TrainConfig(max_epochs=25, patience=25)
    path, meta = train_predictor(
        DEFAULT_DATASET,
        tmp_path / "small.pt",
        encoder,
        config=config,
        cache_dir=tmp_path,
        max_records=num_records,
    )
    splits = split_records(read_dataset(DEFAULT_DATASET)[:num_records])
    train, test = flatten(splits["train"]), flatten(splits["test"])
    assert len(train) >= 24 and len(test) >= 24, "too few real examples"
    true = np.array([e.remaining for e in test], dtype=float)
    cache = EmbeddingCache(encoder, tmp_path, config.prompt_budget)
    predicted = predict_examples(load_checkpoint(path), cache, test)
    model_mae = np.mean(np.abs(predicted - true))
    constant_mae = np.mean(np.abs(np.mean([e.remaining for e in train]) - true))
    assert model_mae < constant_mae, (model_mae, constant_mae)
    assert meta["dataset"]["sha256"] == file_sha256(DEFAULT_DATASET)
    assert meta["dataset"]["counts"]["train_records"] == len(splits["train"])
    assert len(meta["edges"]) == meta["num_priority_levels"] - 2


def test_repredicting_uses_the_partial_output(shipped: LengthPredictor):
    prompt = "Write a detailed, step-by-step guide to planting a vegetable garden."
    start = "Planting a vegetable garden is rewarding. Step 1: choose a sunny spot with good soil."
    initial, with_tokens, ending = shipped.predict(
        [
            PredictionInput(prompt),
            PredictionInput(prompt, start, num_generated=50),
            PredictionInput(prompt, start + " In conclusion, enjoy your harvest!", num_generated=50),
        ]
    )
    assert initial != with_tokens
    assert ending != with_tokens  # same count of tokens, different text: the text itself is read
    assert all(v >= 0 for v in (initial, with_tokens, ending))


def test_serving_and_evaluation_build_the_same_inputs(shipped: LengthPredictor, encoder, tmp_path: Path):
    examples = flatten(read_dataset(DEFAULT_DATASET)[:6])
    served = shipped.predict(
        [PredictionInput(e.prompt, e.output_text, e.num_generated, e.max_tokens) for e in examples]
    )
    cache = EmbeddingCache(encoder, None, int(shipped.metadata["prompt_budget"]))
    # either kind; the ranker's prompt prior (when it has one) rebuilt from the checkpoint as serving does
    evaluated = predict_examples(shipped.checkpoint, cache, examples)
    assert np.allclose(served, evaluated, rtol=1e-3, atol=0.5)


def test_the_default_checkpoint_loads_with_no_manual_step(monkeypatch, tmp_path: Path):
    from elis.config import get_settings

    monkeypatch.setenv("ELIS_CACHE_DIR", str(tmp_path))  # no user checkpoint there: the shipped one is used
    monkeypatch.delenv("ELIS_PREDICTOR_CHECKPOINT", raising=False)
    get_settings.cache_clear()
    try:
        predictor = load_predictor()
    finally:
        get_settings.cache_clear()
    assert predictor.path == SHIPPED_CHECKPOINT.resolve()
    assert predictor.levels.num_levels == predictor.metadata["num_priority_levels"]
    assert predictor.window_tokens == 50
    assert load_predictor(SHIPPED_CHECKPOINT) is predictor  # loaded once per process


def test_the_shipped_checkpoint_was_trained_on_the_shipped_dataset(shipped: LengthPredictor):
    recorded = shipped.metadata["dataset"]["sha256"]
    if shipped.checkpoint.kind == "ranker":  # {file name: sha256} of the corpus files it was trained on
        from elis.predictor.cli import DEFAULT_CORPUS

        recorded, expected = recorded.get(DEFAULT_CORPUS.name), file_sha256(DEFAULT_CORPUS)
    else:
        expected = file_sha256(DEFAULT_DATASET)
    assert recorded == expected, (
        "the dataset changed since the default checkpoint was trained: re-run the command in docs/predictor.md"
    )
