"""Records, summaries, tables and plots shared by the live replay and the simulator."""

from __future__ import annotations

import pytest

from elis.replay.report import (
    JobRecord,
    markdown_table,
    percentile,
    plot_lines,
    read_records_csv,
    summarize,
    summary_rows,
    write_records_csv,
)


def record(job_id: str, arrival: float, start: float, finish: float, tokens: int = 10, status="done"):
    return JobRecord(job_id, "fcfs", arrival, start, finish, finish - arrival, start - arrival, 5, tokens, 1,
                     status, start - arrival)


RECORDS = [record("a", 0, 0, 2), record("b", 1, 2, 5), record("c", 2, 5, 6), record("d", 3, 6, 10),
           record("x", 0, 0, 99, status="failed")]


def test_summarize_reports_jct_percentiles_delay_and_throughput_of_done_jobs():
    summary = summarize(RECORDS)
    assert summary.num_jobs == 4
    assert summary.mean_jct == pytest.approx((2 + 4 + 4 + 7) / 4)
    assert summary.p50_jct == pytest.approx(4.0)
    assert summary.p90_jct == pytest.approx(4 + 0.7 * 3)
    assert summary.mean_queuing_delay == pytest.approx((0 + 1 + 3 + 3) / 4)
    assert summary.max_wait == 3
    assert summary.throughput_rps == pytest.approx(4 / 10)
    assert summary.throughput_tps == pytest.approx(40 / 10)


def test_summarize_of_nothing_is_empty():
    assert summarize([]).num_jobs == 0


def test_percentile_interpolates():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5


def test_records_survive_a_csv_round_trip(tmp_path):
    path = tmp_path / "records.csv"
    write_records_csv(RECORDS, path)
    assert read_records_csv(path) == RECORDS


def test_tables_render_as_markdown_and_plots_as_png(tmp_path):
    header, rows = summary_rows({"fcfs": summarize(RECORDS)})
    text = markdown_table(header, rows)
    assert text.splitlines()[0].startswith("| run | jobs | mean JCT s")
    assert "| fcfs | 4 | 4.25 |" in text
    path = plot_lines([1, 2], {"a": [1.0, 2.0]}, tmp_path / "p.png", xlabel="x", ylabel="y", title="t",
                      reference=[1.0, 2.0])
    assert path.read_bytes()[:4] == b"\x89PNG"
