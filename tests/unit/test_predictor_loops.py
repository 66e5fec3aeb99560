"""The loop rule: detection on real looping outputs, the shares, and its place in the served predictor."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from elis.predictor.checkpoint import load_checkpoint
from elis.predictor.fakes import FakeEncoder
from elis.predictor.features import PredictionInput
from elis.predictor.loops import LoopRule, loop_period, masked
from elis.predictor.serving import LengthPredictor

GREEDY_SET = Path(__file__).resolve().parents[2] / "elis" / "data" / "predictor_greedy_gsm8k.jsonl.gz"
# 1,000 greedy outputs of four sources at max_tokens 1024 (250-275 per source; seed tasks has 175)
GREEDY_FOUR_SOURCES = GREEDY_SET.with_name("predictor_greedy.jsonl.gz")

# A real greedy output of SmolLM2-135M-Instruct (gsm8k-437): the numbers count up, the template repeats.
COUNTING_LOOP = (
    "He will sell 4 chickens for $1.50, so he will sell 4 * 2 = 8 chickens for $1.50.\n"
    "He will sell 8 chickens for $1.50, so he will sell 8 * 2 = 16 chickens for $1.50.\n"
    "He will sell 16 chickens for $1.50, so he will sell 16 * 2 = 32 chickens for $1.50.\n"
    "He will sell 32 chickens for $1.50, so he will sell 32 * 2 = 64 chickens for $1.50.\n"
)
PROSE = (
    "Jose needs 12 tablespoons of lemon juice to make a dozen cupcakes. Every lemon provides 4 tablespoons, "
    "so a dozen cupcakes need 3 lemons. Three dozen cupcakes need 3 * 3 = 9 lemons. The answer is 9."
)


def test_masking_makes_counting_loops_periodic():
    assert masked("2 * 40 = 80, 1,280.5 and x9") == "# * # = #, # and x#"
    period = loop_period(COUNTING_LOOP)
    assert period == len(masked("He will sell 8 chickens for $1.50, so he will sell 8 * 2 = 16 chickens for $1.50.\n"))


# A real greedy output (live run 26) that repeats an item and then stops at the tenth: the enumerators count to
# a stated end, so they are kept and the list is not a loop.
NUMBERED_LIST = "".join(
    f"{i}. Spanish Language Academy - A Spanish language learning platform with a Spanish language course.\n\n"
    for i in range(3, 11)
)


def test_a_numbered_list_is_not_a_loop_but_the_same_items_unnumbered_are():
    assert masked("3. Buy 12 items\n  10) and 4.5") == "3. Buy # items\n  10) and #"
    assert loop_period(NUMBERED_LIST) is None
    assert loop_period(NUMBERED_LIST.replace("\n\n", " ").replace(". Spanish", " Spanish")) is not None


def test_text_that_does_not_repeat_has_no_period():
    assert loop_period(PROSE) is None
    assert loop_period("") is None
    # one repetition of a short phrase is not a loop: the span must cover min_span characters
    assert loop_period("the end. the end.") is None


def test_a_long_period_needs_a_full_repeat():
    letters = random.Random(0)
    paragraph = "".join(letters.choice("abcdefghij ") for _ in range(300))
    assert loop_period(paragraph + paragraph[:150]) is None
    assert loop_period(paragraph + paragraph) == 300
    assert loop_period(paragraph + paragraph, max_period=200) is None


def _job(text: str, temperature: float | None, generated: int = 200, max_tokens: int | None = 512):
    return PredictionInput("p", text, generated, max_tokens, temperature)


def test_the_rule_raises_a_looping_job_to_its_budget_by_temperature():
    rule = LoopRule(greedy_share=1.0, sampled_share=0.8)
    assert rule.apply(40.0, _job(COUNTING_LOOP, 0.0)) == 312.0
    assert rule.apply(40.0, _job(COUNTING_LOOP, 0.7)) == pytest.approx(0.8 * 312 + 0.2 * 40)
    assert rule.apply(40.0, _job(COUNTING_LOOP, None)) == pytest.approx(0.8 * 312 + 0.2 * 40)  # unknown: sampled
    assert rule.apply(40.0, _job(PROSE, 0.0)) == 40.0
    assert rule.apply(40.0, _job(COUNTING_LOOP, 0.0, max_tokens=None)) == 40.0  # no budget known
    assert rule.apply(400.0, _job(COUNTING_LOOP, 0.7)) == 400.0  # never lowers
    assert LoopRule(sampled_share=0.0).apply(40.0, _job(COUNTING_LOOP, 0.7)) == 40.0  # off for sampled


def test_on_the_shipped_greedy_set_every_flagged_output_ran_to_its_limit():
    """150 greedy gsm8k outputs: at every window boundary, a flagged output hit max_tokens (no false
    positive), and by 400 tokens most outputs that would hit it are flagged."""
    records = [json.loads(line) for line in gzip.open(GREEDY_SET, "rt")]
    flagged_at_8 = capped_at_8 = 0
    for record in records:
        capped = record["finish_reason"] == "length"
        offsets = record["window_char_offsets"]
        for step in range(1, min(len(offsets), 9)):
            flagged = loop_period(record["output_text"][: offsets[step]]) is not None
            assert capped or not flagged, (record["id"], step)
            if step == 8:
                flagged_at_8 += flagged
                capped_at_8 += capped
    assert capped_at_8 >= 15
    assert flagged_at_8 >= 0.7 * capped_at_8


def test_the_served_predictor_applies_the_rule(tmp_path: Path):
    from tests.unit.test_predictor_ranker import _checkpoint, _records

    path = _checkpoint(tmp_path, _records(240, samples=1))
    plain = LengthPredictor(FakeEncoder(), load_checkpoint(path), path)
    ruled = LengthPredictor(FakeEncoder(), load_checkpoint(path), path, loop_rule=LoopRule())
    looping = PredictionInput("Count chickens.", COUNTING_LOOP, 200, 1024, 0.0)
    fresh = PredictionInput("Count chickens.", "", 0, 1024, 0.0)
    assert ruled.predict([looping])[0] == 824.0
    assert plain.predict([looping])[0] < 824.0
    assert ruled.predict([fresh]) == plain.predict([fresh])


def test_loop_counts_give_precision_and_recall_per_boundary():
    from elis.predictor.loops import loop_counts

    looping = {"output_text": PROSE + COUNTING_LOOP * 3, "finish_reason": "length",
               "window_char_offsets": [0, len(PROSE), len(PROSE) + 2 * len(COUNTING_LOOP)]}
    ending = {"output_text": PROSE, "finish_reason": "stop", "window_char_offsets": [0, 60]}
    first, second = loop_counts([looping, ending], max_step=5)
    assert (first.step, first.running, first.capped, first.flagged) == (1, 2, 1, 0)
    assert first.recall == 0.0
    assert (second.step, second.running, second.flagged, second.flagged_capped) == (2, 1, 1, 1)
    assert second.precision == 1.0 and second.recall == 1.0


def test_the_loops_command_prints_the_table_and_rejects_a_missing_file(tmp_path: Path):
    from typer.testing import CliRunner

    from elis.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["predictor", "loops", str(GREEDY_SET), "--max-step", "4"])
    assert result.exit_code == 0, result.output
    assert "## temperature 0.0 (150 outputs, 17 ran to max_tokens)" in result.output
    assert "| 4 | 69 | 17 | 11 | 11 | 1.00 | 0.65 |" in result.output
    missing = runner.invoke(app, ["predictor", "loops", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 2
    assert "no such corpus file" in missing.output
    sweep = runner.invoke(app, ["predictor", "loops", str(GREEDY_FOUR_SOURCES), "--by-source",
                                "--min-repeats", "2", "--min-repeats", "4"])
    assert sweep.exit_code == 0, sweep.output
    assert "## temperature 0.0, code_alpaca (275 outputs, 31 ran to max_tokens)" in sweep.output
    # the whole-output rows of the four sources together: 2 copies flag 181 (9 escape), 4 copies 172 (5 escape)
    assert "| 100 | 2 | 181 | 9 | 0.950 | 0.901 | 200 |" in sweep.output
    assert "| 100 | 4 | 172 | 5 | 0.971 | 0.874 | 300 |" in sweep.output


def test_the_live_flag_script_cuts_outputs_only_at_boundaries_the_job_was_still_running_at():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "loop_flags_live.py"
    spec = importlib.util.spec_from_file_location("loop_flags_live", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    class OneCharPerToken:
        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(ord("a") + i % 26) for i in ids)

    stopped, capped = script.window_records([(list(range(346)), 512), (list(range(100)), 100)], OneCharPerToken(), 50)
    # 346 tokens: boundaries at 0, 50, ..., 300; the end (346) is no boundary (no re-prediction after the last token)
    assert stopped["window_char_offsets"] == [0, 50, 100, 150, 200, 250, 300]
    assert len(stopped["output_text"]) == 346 and stopped["finish_reason"] == "stop"
    # 100 tokens at a cap of 100: it finished at the end of its second window, so 100 is no boundary either
    assert capped["window_char_offsets"] == [0, 50] and capped["finish_reason"] == "length"


# Run 31's first escape (docs/evidence/gsm8k-loops-last-r31/loop-flags.md): a sentence said three times, then an end.
SAID_THRICE = ("The total number of sandwiches Samson ate on Tuesday is the sum of his original 3 sandwiches and the "
               "one he ate for breakfast + 1. ")


def test_min_repeats_asks_for_more_copies_of_the_unit():
    period = len(masked(SAID_THRICE))
    assert loop_period(PROSE + SAID_THRICE * 2) == period
    assert loop_period(PROSE + SAID_THRICE * 2, min_repeats=3) is None
    assert loop_period(PROSE + SAID_THRICE * 3, min_repeats=3) == period
    assert loop_period(PROSE + SAID_THRICE * 3, min_repeats=4) is None
    # a short unit must still fill min_span: 6 copies of 21 characters are not a loop at min_span 200
    unit = "one more time, more. "
    assert loop_period(PROSE + unit * 6, min_span=100) == len(unit)
    assert loop_period(PROSE + unit * 6, min_span=200) is None
    assert LoopRule(min_repeats=3).apply(40.0, _job(PROSE + SAID_THRICE * 2, 0.0)) == 40.0


def test_loop_summary_counts_escapes_and_first_flags():
    from elis.predictor.loops import loop_summary

    def record(text: str, boundaries: list[int], reason: str) -> dict:
        return {"output_text": text, "finish_reason": reason, "window_char_offsets": [0, *boundaries]}

    loop_text = PROSE + COUNTING_LOOP * 3
    looping = record(loop_text, [len(PROSE), len(PROSE) + len(COUNTING_LOOP) * 2, len(loop_text)], "length")
    escaping = record(PROSE + SAID_THRICE * 3 + "So the answer is 1.", [len(PROSE) + len(SAID_THRICE) * 3], "stop")
    plain = record(PROSE, [60], "stop")
    summary = loop_summary([looping, escaping, plain], max_step=5)
    assert (summary.outputs, summary.capped, summary.flagged, summary.escaped) == (3, 1, 2, 1)
    assert summary.first_flag_steps == (2,) and summary.median_first_step == 2.0
    assert summary.precision == 0.5 and summary.recall == 1.0
    stricter = loop_summary([looping, escaping, plain], max_step=5, min_repeats=4)
    assert stricter.escaped == 0 and stricter.flagged_capped == 1


def test_loop_repeats_sweep_scores_each_detector_on_the_same_predictions():
    from elis.predictor.experiments import loop_repeats_sweep
    from elis.predictor.features import Example

    def example(i: int, text: str, remaining: int) -> Example:
        return Example(f"r{i}", "p", text, 200, 4, remaining, max_tokens=1024, temperature=0.0)

    # a sentence said twice that then ended (an escape) and a loop of four copies that ran to the cap
    escape = example(0, PROSE + SAID_THRICE * 2, 30)
    loop = example(1, PROSE + COUNTING_LOOP, 824)
    plain = [example(2 + i, PROSE[: 60 + i], 100 + 50 * i) for i in range(4)]
    examples = [escape, loop, *plain]
    predicted = np.array([90.0, 50.0, 100.0, 150.0, 200.0, 250.0])
    sweep = loop_repeats_sweep(examples, predicted, repeats=(2, 3))
    # two copies: the escape is raised to the budget too, which costs rank; three: only the real loop is
    assert sweep["3"]["pooled_tau"] > sweep["2"]["pooled_tau"]
    assert sweep["3"]["tau_step_4"] == pytest.approx(1.0)
    # the step filter: examples at another step count in the pooled tau only
    later = [Example(f"s{i}", "p", PROSE, 300, 6, 900 - 100 * i, max_tokens=1024, temperature=0.0) for i in range(3)]
    wider = loop_repeats_sweep([*examples, *later], np.concatenate([predicted, [10.0, 20.0, 30.0]]), repeats=(3,))
    assert wider["3"]["tau_step_4"] == pytest.approx(1.0)
    assert wider["3"]["pooled_tau"] < sweep["3"]["pooled_tau"]


def _old_loop_period(text: str, min_span: int = 100, max_period: int = 1500) -> int | None:
    """The detector before min_repeats (2026-12-05), kept here to pin the default to it."""
    tail = masked(text[-(4 * max_period + 2 * min_span):])
    n = len(tail)
    last = tail[-8:]
    for period in range(1, max_period + 1):
        span = max(min_span, period)
        if n < span + period:
            return None
        if tail[n - 8 - period:n - period] == last and tail[n - span:] == tail[n - span - period:n - period]:
            return period
    return None


def test_the_default_detector_is_the_one_before_min_repeats():
    rng = random.Random(3)
    words = ["he", "will", "sell", "12", "chickens", "for", "$1.50", "so", "\n", "3.", "the", "answer"]
    texts = [PROSE + COUNTING_LOOP * k for k in range(4)] + [PROSE + SAID_THRICE * k for k in range(4)]
    for _ in range(200):
        unit = " ".join(rng.choice(words) for _ in range(rng.randint(1, 60)))
        noise = " ".join(rng.choice(words) for _ in range(rng.randint(0, 400)))
        texts.append(noise + " " + unit * rng.randint(1, 5))
    for text in texts:
        assert loop_period(text) == _old_loop_period(text), text[-200:]


def test_a_long_unit_fits_the_tail_for_every_min_repeats():
    rng = random.Random(4)
    unit = "".join(rng.choice("abcdefghij ") for _ in range(1400))  # near max_period (1500)
    assert loop_period(PROSE + unit * 2) == 1400
    assert loop_period(PROSE + unit * 2, min_repeats=3) is None
    assert loop_period(PROSE + unit * 3, min_repeats=3) == 1400
    assert loop_period(PROSE + unit * 4, min_repeats=4) == 1400
    with pytest.raises(ValueError):
        loop_period(PROSE, min_repeats=1)


def test_on_four_greedy_sources_a_flag_means_the_cap_about_nineteen_times_in_twenty():
    """The shipped detector on 1,000 greedy outputs of four sources (docs/predictor.md, "The loop rule"): greedy
    loops are not always absorbing (code examples repeated twice and then closed), but a flagged output ran to
    max_tokens about 19 times in 20 (181 flags, 9 escapes), and most outputs that did were flagged by 600 tokens."""
    from elis.predictor.loops import loop_summary

    records = [json.loads(line) for line in gzip.open(GREEDY_FOUR_SOURCES, "rt")]
    assert len(records) == 1000 and all(r["temperature"] == 0.0 for r in records)
    summary = loop_summary(records, max_step=12)
    assert summary.capped >= 150
    assert summary.precision >= 0.94
    assert summary.recall >= 0.85
