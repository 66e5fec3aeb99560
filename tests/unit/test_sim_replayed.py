"""A live run replayed in the simulator with its own predictions (`elis simulate replay`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from elis.simulator.cli import simulate_app
from elis.simulator.engine_profile import EngineProfile
from elis.simulator.length_models import ReplayedPredictions
from elis.simulator.replayed import Arm, LiveRun, read_live_run, replay_live_run

runner = CliRunner()


def _flat(output: str) -> str:
    """The CLI's output without the error box's borders and line breaks (it wraps long messages)."""
    return " ".join(output.replace("│", " ").split())
HEADER = "job_id,policy,arrival,num_prompt_tokens,num_output_tokens,item,initial_prediction,predictions\n"
# A real run's records: left-out seed tasks, run 35 of docs/scheduling.md (100 jobs, forced lengths).
RUN_35 = Path(__file__).resolve().parents[2] / "docs/evidence/seed-tasks-aging-fcfs-r35/forced"


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(row + "\n" for row in rows))
    return path


def test_replayed_predictions_are_the_recorded_ones_and_carry_the_last_one_forward(tmp_path):
    # Job 0: admitted at 300, re-predicted after window 2 (200), not after windows 1 and 3.
    path = _write(tmp_path / "r.csv", ["a,isrtf,10.0,20,250,0,300.0,nan 200.0 nan nan nan"])
    model = ReplayedPredictions.from_records([path], window_tokens=50)
    assert model.predict(250, 0, "0") == 300.0
    assert model.predict(200, 1, "0") == 250.0  # the admission less the 50 tokens generated since
    assert model.predict(150, 2, "0") == 200.0
    assert model.predict(100, 3, "0") == 150.0
    assert model.predict(10, 9, "0") == 1.0  # never below one token
    assert model.predict(77, 0, "unknown") == 77.0  # a job the run did not predict: exact


def test_a_later_file_fills_the_steps_an_earlier_one_lacks_but_never_overrides(tmp_path):
    first = _write(tmp_path / "a.csv", ["a,isrtf,0,5,200,3,120.0,nan nan nan"])
    second = _write(tmp_path / "b.csv", ["b,isrtf,0,5,200,3,999.0,90.0 nan nan"])
    model = ReplayedPredictions.from_records([first, second])
    assert model.predict(200, 0, "3") == 120.0
    assert model.predict(150, 1, "3") == 90.0


def test_read_live_run_starts_arrivals_at_zero_and_sorts_them(tmp_path):
    path = _write(tmp_path / "r.csv", ["b,isrtf,105.5,8,40,1,30.0,", "a,isrtf,100.0,7,600,0,300.0,nan"])
    run = read_live_run([path])
    assert [(j.job_id, j.arrival, j.num_prompt_tokens, j.num_output_tokens) for j in run.jobs] == [
        ("0", 0.0, 7, 600), ("1", 5.5, 8, 40)]
    assert run.max_tokens == 1024  # an output longer than 512


@pytest.mark.parametrize("content, message", [
    ("job_id,arrival\nx,1\n", "missing item, num_prompt_tokens, num_output_tokens"),
    (HEADER, "no jobs"),
    (HEADER + "a,isrtf,soon,1,2,0,3,\n", "not a number"),
    (HEADER + "a,isrtf,10\n", "bad.csv:2: no value for item, num_prompt_tokens, num_output_tokens"),
    (HEADER + "a,isrtf,1,5,60,0,3,\nb,isrtf,2,5,60,0,4,\n", "item '0' appears twice"),
    (HEADER + "a,isrtf,1,5,60,0,3,oops\n", "a prediction is not a number"),
    ("job_id,policy,arrival,num_prompt_tokens,num_output_tokens,item,window_tokens\na,isrtf,1,5,150,0,100 50\n",
     "the run's windows were 100 tokens, not 50 (pass --window 100)"),
])
def test_a_file_that_is_not_a_records_csv_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)):
        read_live_run([path])
    result = runner.invoke(simulate_app, ["replay", str(path)])
    assert result.exit_code == 2 and message in _flat(result.output) and "Traceback" not in result.output


def test_replaying_a_real_run_exact_lengths_beat_fcfs_and_the_margin_changes_isrtf():
    run = read_live_run([RUN_35 / "records-isrtf.csv", RUN_35 / "records-isrtf.r2.csv"])
    assert len(run.jobs) == 100 and run.max_tokens == 512
    arms = [Arm("fcfs", "fcfs", {"guard": False}), Arm("bound", "srtf-oracle", {"guard": False}),
            Arm("never", "isrtf", {"guard": False, "yield_uncertainty": 1.0}),
            Arm("u0", "isrtf", {"guard": False, "yield_uncertainty": 0.0})]
    result = replay_live_run(run, arms, [1.0], profile=EngineProfile.load(None))[1.0]
    assert result["bound"].mean_jct < result["fcfs"].mean_jct
    assert result["u0"].mean_jct != result["never"].mean_jct
    assert all(summary.num_jobs == 100 for summary in result.values())
    # The live predictions, not exact ones: replayed with exact lengths as predictions, ISRTF orders otherwise.
    exact = LiveRun(run.jobs, ReplayedPredictions({}), run.max_tokens)
    assert replay_live_run(exact, arms[2:3], [1.0], profile=EngineProfile.load(None))[1.0]["never"].mean_jct \
        != result["never"].mean_jct


def test_the_replay_command_varies_a_setting_for_the_predicting_policies_only(tmp_path):
    out = tmp_path / "t.png"
    result = runner.invoke(simulate_app, ["replay", str(RUN_35 / "records-isrtf.csv"), "-p", "fcfs,isrtf",
                                          "--vary", "yield_uncertainty=0.5,0.9", "--scales", "1,2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = out.with_suffix(".md").read_text()
    assert table.count("isrtf yield_uncertainty=0.5") == 2 and table.count("| fcfs |") == 2
    assert "fcfs yield_uncertainty" not in table


@pytest.mark.parametrize("args, message", [
    (["--vary", "no_such_setting=1"], "not a setting"),
    (["--vary", "yield_uncertainty"], "NAME=V1,V2"),
    (["--vary", "guard_min_jobs=1"], "guard_min_jobs=1: Input should be greater than or equal to 2"),
    (["--vary", "policy=fcfs,sjf"], "set by the command itself (--policies)"),
    (["-p", "fcfs,srtf-oracle", "--vary", "yield_uncertainty=0.5"], "has none"),
    (["--scales", "0"], "must be finite numbers > 0"),
    (["--scales", "nan"], "must be finite numbers > 0"),
    (["--scales", "abc"], "expected numbers like 1,1.4"),
    (["--slots", "0"], "must be >= 1"),
    (["--max-tokens", "-5"], "must be >= 1"),
    (["--profile", "/nonexistent/profile.json"], "cannot read the engine profile"),
    (["-p", "lifo"], "unknown policy"),
])
def test_bad_options_are_clear_errors(args, message):
    result = runner.invoke(simulate_app, ["replay", str(RUN_35 / "records-isrtf.csv"), *args])
    assert result.exit_code == 2 and message in _flat(result.output), result.output


def test_the_simulated_service_takes_the_prefill_weight_of_the_simulated_engine_unless_one_is_set(monkeypatch):
    from elis.simulator.engine_profile import EngineProfile
    from elis.simulator.figures import profile_weight

    monkeypatch.delenv("ELIS_PREFILL_WEIGHT", raising=False)
    engine = EngineProfile({1: 0.02, 8: 0.04}, prefill_s_per_token=0.001)
    assert profile_weight(engine, 8) == pytest.approx(0.001 * 8 / 0.04)
    monkeypatch.setenv("ELIS_PREFILL_WEIGHT", "0")
    assert profile_weight(engine, 8) == 0.0
