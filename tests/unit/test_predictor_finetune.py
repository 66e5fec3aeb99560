"""The encoder fine-tuning study: grouping by prompt, the metric, batching, and one small real run."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from elis.predictor.corpus_eval import split_leave_one_out
from elis.predictor.evaluation import kendall_tau_b
from elis.predictor.fakes import fake_record
from elis.predictor.finetune import (
    FinetuneConfig,
    _standardized,
    _val_tau,
    ceiling_tau,
    compare_on,
    length_batches,
    multi_sample,
    prompt_rows,
    _seed_summary,
    record_tau,
    seeds_markdown,
    study_markdown,
)


def _record(prompt: str, length: int, source: str = "alpaca") -> dict:
    return {"prompt": prompt, "output_ids": [1] * length, "source": source}


def test_prompt_rows_group_samples_of_one_prompt_and_target_their_mean_length():
    records = [_record("Name a river.", 10), _record("name  a RIVER.", 30), _record("Write an essay.", 400)]
    rows = prompt_rows(records, head_of=str.strip)
    assert [r.lengths for r in rows] == [[10, 30], [400]]
    assert rows[0].text == "Name a river."  # the first sample's text, as the encoder reads it
    assert rows[0].target == pytest.approx(math.log1p(20.0))


def test_record_tau_scores_each_sample_against_its_prompts_prediction():
    rows = prompt_rows([_record("a", 10), _record("a", 20), _record("b", 300)], head_of=str)
    # three samples, three pairs: the two cross-prompt pairs ordered right; the pair within prompt a is tied
    # in the prediction, which tau-b takes out of the denominator: 2 / sqrt((3 - 1) * 3)
    assert record_tau(rows, [1.0, 2.0]) == pytest.approx(2 / math.sqrt(6))
    assert record_tau(rows, [2.0, 1.0]) == pytest.approx(-2 / math.sqrt(6))


def test_the_ceiling_predicts_each_sample_by_its_prompts_other_samples():
    rows = prompt_rows([_record("a", 10), _record("a", 30), _record("b", 300), _record("b", 500),
                        _record("c", 50)], head_of=str)
    # a: 10 <- 30, 30 <- 10; b: 300 <- 500, 500 <- 300; c has one sample and is left out
    assert ceiling_tau(rows) == pytest.approx(kendall_tau_b([30, 10, 500, 300], [10, 30, 300, 500]))
    kept, predictions = multi_sample(rows, [1.0, 2.0, 3.0])
    assert [r.text for r in kept] == ["a", "b"] and predictions == [1.0, 2.0]


def test_per_source_learning_standardizes_targets_and_scores_validation_within_each_source():
    """--per-source: each source's targets become z-scores of their own (a short math answer and a long essay
    can both be 'long for their source'), and validation is the mean of the within-source taus, which a
    predictor that only tells sources apart does not raise."""
    import numpy as np
    import torch

    from elis.predictor.ranker import pairwise_rank_loss

    records = [_record(f"m{i}", 10 + i) for i in range(12)] + [_record(f"e{i}", 400 + 10 * i, "essays")
                                                               for i in range(12)]
    rows = prompt_rows(records, head_of=str)
    pooled, within = _standardized(rows, False), _standardized(rows, True)
    assert pooled[:12].max() < 0 < pooled[12:].min()  # pooled: every essay is longer than every math answer
    for part in (within[:12], within[12:]):
        assert abs(part.mean()) < 1e-9 and part.std() == pytest.approx(1.0)
    source_only = np.array([0.0] * 12 + [1.0] * 12)  # knows the source, nothing within it
    assert _val_tau(rows, source_only, per_source=False) > 0.5
    assert _val_tau(rows, source_only, per_source=True) == 0.0
    assert _val_tau(rows, np.arange(24.0), per_source=True) == pytest.approx(1.0)
    # the rank loss over within-source pairs only: a wrong order across sources costs nothing
    scores, targets = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert pairwise_rank_loss(scores, targets) > 1.0
    assert pairwise_rank_loss(scores, targets, pair_mask=torch.tensor([[True, False], [False, True]])) == 0.0


def test_length_batches_cover_every_text_once_and_group_similar_lengths():
    rng = random.Random(3)
    texts = ["x" * rng.randint(1, 500) for _ in range(200)]
    batches = length_batches(texts, 32, random.Random(0))
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(200))
    assert all(len(b) <= 32 for b in batches)
    spans = [max(len(texts[i]) for i in b) - min(len(texts[i]) for i in b) for b in batches]
    assert max(spans) < 150  # random batches of these lengths span about 480 characters
    assert length_batches(texts, 32, random.Random(0)) == batches  # seeded


@pytest.mark.slow
def test_a_small_study_learns_a_learnable_length_signal_and_tuning_starts_from_the_frozen_head():
    from elis.predictor.encoder import load_encoder

    rng = random.Random(0)
    records = [fake_record(i, rng, source="alpaca" if i % 4 else "code") for i in range(160)]
    encoder = load_encoder("")
    splits = split_leave_one_out(records, "code")
    result = compare_on(encoder, splits, [1], FinetuneConfig(max_epochs=1, frozen_epochs=15, frozen_patience=15))
    frozen, tuned = result["runs"][0], result["runs"][1]
    # "Write a detailed essay" vs "Give one word": the frozen encoder already separates them
    assert frozen["test_tau"] > 0.4
    assert tuned["val_tau"] >= frozen["val_tau"]  # epoch 0 is the frozen head: tuning can only be kept if better
    assert tuned["test_tau"] > 0.3
    assert "| code |" in study_markdown({"code": result}, [1])


def test_seeds_are_scored_alone_and_as_an_ensemble_of_their_mean_prediction():
    rows = prompt_rows([_record(f"p{i}", 10 * (i + 1)) for i in range(6)] + [_record("p0", 15)], head_of=str)
    # two seeds, each wrong on a different pair; their mean ranks every prompt right
    first = np.array([1.0, 2.6, 2.4, 4.0, 5.0, 6.0])
    second = np.array([1.0, 2.0, 3.2, 4.0, 5.5, 5.0])
    summary = _seed_summary(rows, [0, 1], [first, second])
    assert summary["test_tau"] == [round(record_tau(rows, first), 4), round(record_tau(rows, second), 4)]
    best_order = round(record_tau(rows, np.arange(6.0)), 4)  # below 1: p0's two samples share a prediction
    assert summary["ensemble_test_tau"] == best_order > max(summary["test_tau"])
    # one prompt with two samples: both get one prediction, so no pair ranks (NaN, shown as "-" below)
    assert all(math.isnan(t) for t in summary["test_tau_on_ceiling_set"])
    table = seeds_markdown({"alpaca": {"ceiling_tau": 0.5, "seeds": {"2": summary}}})
    assert "| alpaca | top 2 layers tuned | 0, 1 |" in table and f"**{best_order:.3f}**" in table
    assert seeds_markdown({"alpaca": {"ceiling_tau": 0.5, "runs": {}}}) == ""
