"""The predictor's data side: examples and targets, the split by prompt, the text join, the metrics."""

from __future__ import annotations

import random

import numpy as np
import pytest

from elis.predictor.evaluation import kendall_tau_b, metrics, per_step
from elis.predictor.fakes import fake_records
from elis.predictor.features import examples_from_record, join_text, prompt_key, split_of, step_feature
from elis.predictor.training import split_records


def _record(num_output: int, window: int = 50) -> dict:
    text = "x" * num_output  # one char per token, so offsets are exact
    offsets = [k * window for k in range((num_output - 1) // window + 1)]
    return {
        "id": "r1",
        "source": "alpaca",
        "prompt": "Say something.",
        "output_ids": list(range(num_output)),
        "output_text": text,
        "window_char_offsets": offsets,
        "window_tokens": window,
    }


def test_one_example_per_window_boundary_with_the_remaining_tokens_as_target():
    examples = examples_from_record(_record(120))
    assert [(e.step, e.num_generated, e.remaining) for e in examples] == [
        (0, 0, 120),
        (1, 50, 70),
        (2, 100, 20),
    ]
    assert [len(e.output_text) for e in examples] == [0, 50, 100]


def test_an_output_of_exactly_k_windows_has_no_example_with_zero_remaining():
    examples = examples_from_record(_record(100))
    assert [e.remaining for e in examples] == [100, 50]


def test_the_split_is_deterministic_and_ignores_case_and_whitespace():
    assert split_of("Name a  fruit.") == split_of("name a fruit.")
    assert prompt_key(" Name a fruit. ") == prompt_key("name a fruit.")
    counts = {"train": 0, "val": 0, "test": 0}
    for i in range(2000):
        counts[split_of(f"prompt number {i}")] += 1
    assert 1500 < counts["train"] < 1700 and 120 < counts["val"] < 280 and 120 < counts["test"] < 280


def test_no_prompt_lands_in_two_splits_and_ood_sources_are_held_out():
    records = fake_records(60, ood_every=5)
    duplicate = dict(records[1], id="dup", prompt=records[1]["prompt"].upper())
    ood_copy = dict(records[1], id="ood-copy", source="seed_tasks")
    splits = split_records([*records, duplicate, ood_copy])
    where = {}
    for name, members in splits.items():
        for record in members:
            where.setdefault(prompt_key(record["prompt"]), set()).add(name)
    assert all(len(names) == 1 for names in where.values())
    assert all(r["source"] == "seed_tasks" for r in splits["ood"])
    assert all(r["source"] != "seed_tasks" for name in ("train", "val", "test") for r in splits[name])
    assert "ood-copy" not in {r["id"] for r in splits["ood"]}


def test_step_feature_grows_with_tokens_generated():
    assert step_feature(0) == 0.0
    assert step_feature(50) < step_feature(500) < step_feature(1024) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from elis.predictor.encoder import bundled_encoder_dir

    return AutoTokenizer.from_pretrained(bundled_encoder_dir())


def test_join_keeps_the_prompt_head_and_the_output_tail_within_the_encoder_length(tokenizer):
    prompt = "START " + "prompt words here " * 100 + " PROMPTEND"
    output = "OUTSTART " + "answer text goes on " * 200 + " LASTWORDS"
    text = join_text(tokenizer, prompt, output, max_length=256, prompt_budget=96)
    ids = tokenizer(text)["input_ids"]
    assert len(ids) <= 256
    assert text.startswith("START") and text.endswith("LASTWORDS")
    assert "PROMPTEND" not in text and "OUTSTART" not in text
    head, _tail = text.split(" [SEP] ")
    assert len(tokenizer(head, add_special_tokens=False)["input_ids"]) == 96


def test_join_gives_a_short_output_all_it_needs_and_the_prompt_the_rest(tokenizer):
    prompt = "word " * 400
    text = join_text(tokenizer, prompt, "short answer", max_length=256, prompt_budget=96)
    assert text.endswith("[SEP] short answer")
    assert len(tokenizer(text)["input_ids"]) == 256


def test_join_without_output_is_the_prompt_alone(tokenizer):
    assert join_text(tokenizer, "Name a fruit.", "", max_length=256) == "Name a fruit."


def test_kendall_tau_matches_scipy_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = random.Random(1)
    x = [rng.randint(0, 20) for _ in range(700)]
    y = [xi + rng.randint(-8, 8) for xi in x]
    assert kendall_tau_b(x, y, chunk=64) == pytest.approx(scipy_stats.kendalltau(x, y).statistic, abs=1e-12)


def test_metrics_of_a_perfect_and_a_constant_predictor():
    true = np.array([10.0, 20.0, 30.0, 40.0])
    perfect = metrics(true, true)
    assert (perfect.mae, perfect.rmse, perfect.r2, perfect.kendall_tau) == (0.0, 0.0, 1.0, 1.0)
    constant = metrics(true, np.full(4, 25.0))
    assert constant.mae == 10.0 and constant.r2 == pytest.approx(0.0)


def test_per_step_rows_end_with_all():
    rows = per_step(np.array([5.0, 6, 7, 8]), np.array([5.0, 6, 7, 9]), np.array([0, 0, 1, 1]))
    assert [name for name, _ in rows] == ["0", "1", "all"]
    assert rows[1][1].mae == 0.5 and rows[2][1].n == 4


def test_repetition_features_flag_a_loop_and_not_ordinary_prose():
    from elis.predictor.features import repetition_features

    loop = "I am a helpful assistant. " * 60
    prose = (
        "Photosynthesis turns light into chemical energy. Chlorophyll absorbs red and blue light, "
        "water is split, oxygen escapes, and the Calvin cycle fixes carbon dioxide into sugars that "
        "feed the plant and, through food chains, almost every living thing on Earth."
    )
    loop_ratio, loop_distinct = repetition_features(loop)
    prose_ratio, prose_distinct = repetition_features(prose)
    assert loop_ratio < 0.2 < prose_ratio
    assert loop_distinct < 0.2 and prose_distinct > 0.9
    assert repetition_features("short") == [1.0, 1.0]


def test_a_prediction_never_exceeds_the_jobs_remaining_token_limit():
    from elis.predictor.features import PredictionInput, cap_remaining

    assert cap_remaining(900.0, PredictionInput("p", "o", num_generated=200, max_tokens=1024)) == 824.0
    assert cap_remaining(-5.0, PredictionInput("p")) == 0.0
    assert cap_remaining(900.0, PredictionInput("p")) == 900.0


def test_feature_sets_give_fixed_width_rows():
    from elis.predictor.features import PredictionInput, extra_features

    items = [PredictionInput("p"), PredictionInput("p", "word " * 100, 100)]
    assert extra_features("cls", items) == [[], []]
    assert [len(r) for r in extra_features("cls+step", items)] == [2, 2]
    assert [len(r) for r in extra_features("cls+step+repetition", items)] == [4, 4]
    with pytest.raises(ValueError):
        extra_features("nope", items)
