"""`elis report` statistics against hand-computed values, and the command on saved run folders."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from typer.testing import CliRunner

from elis.cli import app
from elis.config import Settings
from elis.replay.analysis import (
    PredictionPoint,
    finished_jobs,
    guard_verdict,
    jct_by_length,
    kendall_tau,
    prediction_points,
    prediction_table,
    queuing_over_time,
)
from elis.replay.live import LiveRecord, write_live_records
from elis.replay.report import JobRecord
from elis.replay.sweep import sweep_rows

runner = CliRunner()


def live(item: int, arrival: float, jct: float, tokens: int, queued: float = 0.0, status: str = "done",
         initial: float = math.nan, windows: tuple[int, ...] = (), predictions: tuple[float, ...] = (),
         policy: str = "isrtf") -> LiveRecord:
    record = JobRecord(f"j{item}", policy, arrival, arrival + queued, arrival + jct, jct, queued, 20, tokens,
                       len(windows) or 1, status, queued)
    return LiveRecord(record, item, initial, windows, predictions)


def test_kendall_tau_matches_hand_computed_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    # pairs of (1,3,2) vs (1,2,3): (0,1) +, (0,2) +, (1,2) -  -> (2 - 1) / 3
    assert kendall_tau([1, 3, 2], [1, 2, 3]) == pytest.approx(1 / 3)
    # tau-b with a tie in x: x (1,1,2), y (1,2,3): pairs (0,1) tie in x, (0,2) +, (1,2) + -> 2 / sqrt(2 * 3)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau([5], [3]))
    assert kendall_tau([1, 1], [2, 3]) == 0.0  # predictions that do not vary rank nothing (as the guard scores them)
    assert math.isnan(kendall_tau([1, 2], [3, 3]))  # nothing to rank


def test_kendall_tau_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    xs = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0]
    ys = [2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0, 2.0, 8.0]
    assert kendall_tau(xs, ys) == pytest.approx(stats.kendalltau(xs, ys).statistic)


def test_jct_by_true_length_bucket():
    records = [live(0, 0, 2.0, 10), live(1, 0, 4.0, 31), live(2, 0, 9.0, 32), live(3, 0, 30.0, 600),
               live(4, 0, 99.0, 40, status="failed")]
    assert jct_by_length(records) == [("0-31", 2, 3.0), ("32-63", 1, 9.0), ("512-1023", 1, 30.0)]


def test_queuing_delay_over_time_is_by_arrival_from_the_first():
    records = [live(0, 105.0, 3, 10, queued=2.0), live(1, 100.0, 3, 10, queued=0.5),
               live(2, 101.0, 3, 10, status="cancelled")]
    assert queuing_over_time(records) == [(0.0, 0.5), (5.0, 2.0)]


def test_prediction_points_pair_each_prediction_with_the_true_remaining_length():
    # 120 tokens in windows of 50, 50, 20: predictions at admission, after window 1 and after window 2.
    job = live(0, 0, 5, 120, initial=90.0, windows=(50, 50, 20), predictions=(60.0, 30.0, math.nan))
    short = live(1, 0, 2, 40, initial=70.0, windows=(40,), predictions=(math.nan,))
    assert prediction_points([job, short]) == [
        PredictionPoint(0, 90.0, 120), PredictionPoint(1, 60.0, 70), PredictionPoint(2, 30.0, 20),
        PredictionPoint(0, 70.0, 40),
    ]
    table = prediction_table(prediction_points([job, short]))
    assert table[0] == ("0", 2, pytest.approx((30 + 30) / 2), 1.0)  # 90 vs 120, 70 vs 40: ranked right
    assert table[1][:3] == ("1", 1, 10.0) and math.isnan(table[1][3])
    assert table[-1][:3] == ("all", 4, pytest.approx((30 + 10 + 10 + 30) / 4))
    assert prediction_points([live(2, 0, 1, 5)]) == []  # FCFS: no predictor


def test_finished_jobs_are_what_the_live_guard_reads():
    # As storage.jobs.recent_finished: (tokens generated, prediction) per window before the last token.
    job = live(0, 0, 5, 120, queued=1.0, initial=90.0, windows=(50, 50, 20), predictions=(60.0, 30.0, math.nan))
    no_predictor = live(1, 0, 2, 40, windows=(40,), predictions=(math.nan,))
    failed = live(2, 0, 2, 40, status="failed", initial=10.0)
    jobs = finished_jobs([job, no_predictor, failed])
    assert [j.job_id for j in jobs] == ["j0", "j1"]
    assert jobs[0].step_predictions == ((50, 60.0), (100, 30.0))
    assert jobs[0].initial_prediction == 90.0 and jobs[0].service_s == pytest.approx(4.0)
    assert jobs[1].initial_prediction is None and jobs[1].step_predictions == ()


def _predicted_jobs(count: int, rank: int) -> list[LiveRecord]:
    """`count` finished jobs whose every prediction ranks the true remaining length right (rank 1) or
    exactly backwards (rank -1)."""
    def said(remaining: int) -> float:
        return float(remaining) if rank > 0 else 1000.0 - remaining

    records = []
    for i in range(count):
        tokens = 20 + 15 * i
        windows = tuple([50] * (tokens // 50) + ([tokens % 50] if tokens % 50 else []))
        done = list(itertools.accumulate(windows))
        predictions = tuple(said(tokens - d) if d < tokens else math.nan for d in done)
        records.append(live(i, i, 2.0, tokens, initial=said(tokens), windows=windows, predictions=predictions))
    return records


def test_guard_verdict_trusts_and_preempts_on_predictions_that_rank_and_not_on_those_that_do_not():
    settings = Settings()
    good = guard_verdict(_predicted_jobs(30, rank=1), settings)
    assert good.jobs == 30 and good.admission_tau == pytest.approx(1.0) and good.pooled_tau == pytest.approx(1.0)
    assert good.yield_precision == pytest.approx(1.0) and good.yield_pairs > 0
    assert good.trusted and good.preempting
    bad = guard_verdict(_predicted_jobs(30, rank=-1), settings)
    assert bad.admission_tau == pytest.approx(-1.0)
    assert not bad.trusted and not bad.preempting
    assert "fall" in bad.reason.lower() or "below" in bad.reason.lower()
    few = guard_verdict(_predicted_jobs(5, rank=1), settings)  # under guard_min_jobs: the start state holds
    assert not few.trusted and not few.preempting
    admission_only = [live(r.item, 0, 2.0, r.record.num_output_tokens, initial=r.initial_prediction)
                      for r in _predicted_jobs(30, rank=1)]
    only = guard_verdict(admission_only, settings)  # an FCFS run: no re-predictions to judge pre-emption by
    assert only.trusted and not only.preempting and only.pooled_tau is None


def _saved_run(folder, rate, slow):
    folder.mkdir(parents=True)
    fcfs = [live(i, i, slow * (i + 1), 40 + 60 * i, queued=i, policy="fcfs") for i in range(4)]
    isrtf = [live(i, i, 1.0 + i, 40 + 60 * i, initial=50.0 + 50 * i, windows=(50,) * 3,
                  predictions=(30.0 * i, 10.0, math.nan)) for i in range(4)]
    bound = [live(i, i, 0.5 + i, 40 + 60 * i, policy="srtf-oracle") for i in range(4)]
    for name, records in (("fcfs", fcfs), ("isrtf", isrtf), ("bound", bound)):
        write_live_records(records, folder / f"records-{name}.csv")
    (folder / "manifest.json").write_text(json.dumps({"options": {"rate": rate}, "status": "complete"}))


def test_report_rebuilds_tables_and_plots_of_a_saved_run_and_a_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    _saved_run(sweep / "rate-0.5", 0.5, slow=2.0)
    _saved_run(sweep / "rate-1", 1.0, slow=3.0)
    rates, by_name = sweep_rows(sorted(sweep.glob("rate-*")))
    assert rates == [0.5, 1.0]
    assert by_name["fcfs"][0.5]["mean_jct"] == pytest.approx(2.0 * (1 + 2 + 3 + 4) / 4)
    assert by_name["fcfs"][1.0]["mean_jct"] == pytest.approx(3.0 * 10 / 4)

    result = runner.invoke(app, ["report", str(sweep)])
    assert result.exit_code == 0, result.output
    for name in ("table.md", "table.csv", "jct_cdf.png", "jct_by_length.csv", "jct_by_length.png",
                 "queuing_over_time.png", "predictions.md", "predictions.png"):
        assert (sweep / "rate-1" / "report" / name).stat().st_size > 0
    for name in ("sweep.md", "sweep.csv", "sweep_mean_jct.png", "sweep_p99_jct.png"):
        assert (sweep / name).stat().st_size > 0
    table = (sweep / "rate-1" / "report" / "table.md").read_text()
    assert "| fcfs | 4/4 | 7.50 (1.00/3.75) |" in table  # 3 x (1+2+3+4)/4 against the bound's 2.0
    guard_rows = (sweep / "rate-1" / "report" / "guard.csv").read_text().splitlines()
    assert guard_rows[1].startswith("isrtf,4,") and guard_rows[1].endswith(",FCFS (fallback),off")  # 4 < min_jobs
    lengths = (sweep / "rate-1" / "report" / "jct_by_length.csv").read_text().splitlines()
    assert "fcfs,32-63,1,3.00" in lengths and "fcfs,128-255,2,10.50" in lengths  # 160 and 220 tokens: 9, 12 s


def test_report_refuses_a_folder_without_records(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "no records-<run>.csv files" in result.output
