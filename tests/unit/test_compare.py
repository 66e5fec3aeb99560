"""`elis compare` without the stack: the table and its ratios, the bound's items, the records CSV, the options."""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from elis.cli import app
from elis.replay.analysis import finished_jobs
from elis.replay.compare import (
    TABLE_NOTE,
    bound_items,
    comparison_table,
    forced_order_warning,
    metrics_of,
    policy_of_run,
    round_order,
    round_spread,
    run_name,
    table_note,
    true_lengths_of,
    warmup_items,
)
from elis.replay.live import LiveRecord, WorkItem, live_record, read_live_records, write_live_records
from elis.replay.report import JobRecord, read_records_csv, summarize
from elis.replay.sources import WorkloadError, arrival_offsets, build_workload

runner = CliRunner()


def rec(item: int, arrival: float, finish: float, queued: float, tokens: int, status: str = "done",
        policy: str = "fcfs", predictions: tuple[float, ...] = ()) -> LiveRecord:
    record = JobRecord(job_id=f"j{item}", policy=policy, arrival=arrival, first_start=arrival + queued,
                       finish=finish, jct=finish - arrival, queuing_delay=queued, num_prompt_tokens=10,
                       num_output_tokens=tokens, num_windows=1, status=status)
    return LiveRecord(record, item, initial_prediction=40.0 if predictions else math.nan,
                      window_tokens=tuple(50 for _ in predictions), predictions=predictions)


def test_metrics_and_ratios_match_hand_computed_values():
    fcfs = [rec(0, 0, 4, 1, 10), rec(1, 1, 9, 3, 30), rec(2, 2, 6, 0, 20)]  # JCTs 4, 8, 4
    fast = [rec(0, 0, 2, 0, 10), rec(1, 1, 9, 4, 30), rec(2, 2, 4, 0, 20)]  # JCTs 2, 8, 2
    bound = [rec(0, 0, 1, 0, 10), rec(1, 1, 5, 2, 30), rec(2, 2, 4, 0, 20)]  # JCTs 1, 4, 2
    values = metrics_of(fcfs)
    assert values["mean_jct"] == pytest.approx(16 / 3)
    assert values["p50_jct"] == 4.0
    assert values["p90_jct"] == pytest.approx(4 + 0.8 * 4)  # sorted 4, 4, 8: position 1.8
    assert values["mean_queuing_delay"] == pytest.approx(4 / 3)
    assert values["max_queuing_delay"] == 3.0
    assert values["throughput_rps"] == pytest.approx(3 / 9)  # makespan: last finish 9 - first arrival 0
    assert values["throughput_tps"] == pytest.approx(60 / 9)
    assert values["mean_output_tokens"] == pytest.approx(20)

    _, rows, csv_header, csv_rows = comparison_table({"fcfs": fcfs, "isrtf": fast, "bound": bound})
    by_run = {row[0]: dict(zip(csv_header, row)) for row in csv_rows}
    assert by_run["isrtf"]["mean_jct_vs_fcfs"] == pytest.approx(4 / (16 / 3))
    assert by_run["isrtf"]["mean_jct_vs_bound"] == pytest.approx(4 / (7 / 3))
    assert by_run["fcfs"]["mean_jct_vs_fcfs"] == 1.0
    assert by_run["bound"]["mean_jct_vs_bound"] == 1.0
    assert rows[1][2] == "4.00 (0.75/1.71)"


def test_unfinished_jobs_are_counted_but_not_measured():
    records = [rec(0, 0, 4, 1, 10), rec(1, 0, math.nan, 0, 0, status="cancelled")]
    values = metrics_of(records)
    assert values["jobs"] == 1 and values["submitted"] == 2
    assert values["mean_jct"] == 4.0
    _, rows, _, _ = comparison_table({"isrtf": records})
    assert rows[0][1] == "1/2"
    assert rows[0][2] == "4.00 (-/-)"  # no FCFS and no bound row: no ratios


def test_the_bound_forces_the_recorded_lengths_of_finished_jobs_only():
    items = [WorkItem(i, float(i), {"messages": [{"role": "user", "content": f"p{i}"}], "max_tokens": 64,
                                    "temperature": 0.0}) for i in range(3)]
    lengths = true_lengths_of([rec(0, 0, 1, 0, 17), rec(1, 0, 1, 0, 64), rec(2, 0, 1, 0, 5, status="failed")])
    assert lengths == {0: 17, 1: 64}
    forced = bound_items(items, lengths)
    assert [i.index for i in forced] == [0, 1]
    # The natural cap stays: the API clips predictions at it, not at the known length (no leak of the answer).
    assert forced[0].body == {"messages": [{"role": "user", "content": "p0"}], "temperature": 0.0,
                              "max_tokens": 64, "target_output_tokens": 17}
    assert forced[1].offset_s == 1.0
    longer = bound_items(items[:1], {0: 100})  # recorded under a larger cap: the cap rises to the length
    assert longer[0].body["max_tokens"] == 100 and longer[0].body["target_output_tokens"] == 100


def test_a_forced_comparison_with_no_natural_job_to_judge_is_called_the_fallback_before_it_runs():
    items = [WorkItem(i, float(i), {"messages": [{"role": "user", "content": f"p{i}"}], "max_tokens": 64})
             for i in range(3)]
    forced = bound_items(items, {0: 17, 1: 30, 2: 5})
    no_evidence = {"fallback": True, "reason": "no evidence yet: fewer than 20 finished jobs with predictions"}
    warning = forced_order_warning(forced, ["fcfs", "sjf", "isrtf"], no_evidence)
    assert warning is not None and "sjf, isrtf will run in the guard's fallback order" in warning
    assert "natural pass" in warning
    judged = {"fallback": True, "reason": "FCFS fallback: predictions rank at tau 0.050 over the last 60 finished"}
    assert forced_order_warning(forced, ["sjf"], judged) is None  # judged on natural jobs: FCFS by right
    assert forced_order_warning(forced, ["fcfs", "mlfq", "srtf-oracle"], no_evidence) is None  # no prediction used
    assert forced_order_warning(items, ["isrtf"], no_evidence) is None  # natural lengths: the guard will learn
    assert forced_order_warning(forced, ["isrtf"], {"fallback": False, "reason": "predictions trusted"}) is None


def test_the_warm_up_sends_every_prompt_at_once_for_one_forced_token():
    items = [WorkItem(i, 3.0 * i, {"messages": [{"role": "user", "content": f"p{i}"}], "max_tokens": 64,
                                   "temperature": 0.0}) for i in range(3)]
    warm = warmup_items(items)
    assert [i.index for i in warm] == [0, 1, 2] and {i.offset_s for i in warm} == {0.0}
    # forced (target_output_tokens), so the quality guard leaves them out; no max_tokens to clash with it
    assert all(i.body["target_output_tokens"] == 1 and "max_tokens" not in i.body for i in warm)
    assert warm[2].body["messages"] == items[2].body["messages"]


def test_records_csv_round_trips_with_predictions_and_reads_as_a_plain_report(tmp_path):
    records = [rec(1, 0, 4, 1, 120, policy="isrtf", predictions=(70.0, 21.5, math.nan)),
               rec(0, 1, 2, 0, 10)]
    path = tmp_path / "records-isrtf.csv"
    write_live_records(records, path)
    back = read_live_records(path)
    assert [r.item for r in back] == [0, 1]  # sorted by workload item
    assert back[1].record == records[0].record
    assert back[1].predictions[:2] == (70.0, 21.5) and math.isnan(back[1].predictions[2])
    assert back[1].window_tokens == (50, 50, 50) and back[1].initial_prediction == 40.0
    assert back[0].has_predictions is False and back[1].has_predictions is True
    assert [r.job_id for r in read_records_csv(path)] == ["j0", "j1"]


def test_a_job_detail_becomes_a_record_with_its_window_predictions():
    detail = {
        "id": "abc", "policy": "isrtf", "status": "done", "arrival_at": "2026-11-21T10:00:00+00:00",
        "first_started_at": "2026-11-21T10:00:01+00:00", "finished_at": "2026-11-21T10:00:05+00:00",
        "num_prompt_tokens": 12, "num_output_tokens": 70, "num_windows": 2, "initial_prediction": 55.0,
        "finish_reason": "stop", "metrics": {"jct_s": 5.0, "queuing_delay_s": 1.5, "service_s": 3.5},
        "windows": [
            {"index": 1, "num_tokens": 20, "prediction_before": 10.0, "prediction_after": None, "compute_s": 0.6,
             "enqueued_at": "2026-11-21T10:00:03+00:00", "started_at": "2026-11-21T10:00:03.500000+00:00"},
            {"index": 0, "num_tokens": 50, "prediction_before": 55.0, "prediction_after": 10.0, "compute_s": 1.5,
             "enqueued_at": "2026-11-21T10:00:00+00:00", "started_at": "2026-11-21T10:00:01+00:00"},
        ],
    }
    live = live_record(detail, item=3)
    assert live.item == 3 and live.record.jct == 5.0 and live.record.max_wait == 1.0
    assert live.window_tokens == (50, 20)
    assert live.predictions[0] == 10.0 and math.isnan(live.predictions[1])
    assert live.initial_prediction == 55.0 and live.finish_reason == "stop"
    assert live.window_compute_s == (1.5, 0.6)


def test_a_records_admission_wait_is_the_receipt_to_the_store_and_the_table_shows_its_mean(tmp_path):
    detail = {
        "id": "abc", "policy": "fcfs", "status": "done", "received_at": "2026-11-21T09:59:57.500000+00:00",
        "arrival_at": "2026-11-21T10:00:00+00:00", "first_started_at": "2026-11-21T10:00:01+00:00",
        "finished_at": "2026-11-21T10:00:05+00:00", "num_prompt_tokens": 12, "num_output_tokens": 70,
        "num_windows": 1, "initial_prediction": 55.0, "finish_reason": "stop",
        "metrics": {"jct_s": 7.5, "queuing_delay_s": 1.0, "service_s": 4.0, "admission_s": 2.5}, "windows": [],
    }
    live = live_record(detail, item=0)
    assert live.record.admission == 2.5 and live.record.jct == 7.5
    other = replace(live, record=replace(live.record, job_id="b", admission=0.5))
    values = metrics_of([live, other])
    assert values["mean_admission"] == pytest.approx(1.5)
    # The throughput's span starts at the first receipt, as the JCTs do.
    assert summarize([live.record]).makespan == pytest.approx(7.5)
    # The service time the guard learns excludes the admission wait as it excludes the queue.
    assert finished_jobs([live])[0].service_s == pytest.approx(4.0)
    path = tmp_path / "records-fcfs.csv"
    write_live_records([live, other], path)
    assert [r.record.admission for r in read_live_records(path)] == [2.5, 0.5]
    # A job detail from an API that kept no receipt has no admission wait.
    older = {key: value for key, value in detail.items() if key != "received_at"}
    assert live_record(older, item=0).record.admission == 0.0


def test_records_written_before_the_admission_column_read_with_no_admission_wait():
    path = (Path(__file__).resolve().parents[2] / "docs" / "evidence" / "seed-tasks-served-r46" / "isrtf-1"
            / "records-isrtf.csv")
    assert "admission" not in path.read_text().splitlines()[0].split(",")
    records = read_live_records(path)
    assert len(records) == 100 and all(r.record.admission == 0.0 for r in records)
    assert records[0].record.jct == pytest.approx(10.488055)


def test_engine_speed_per_run_is_window_compute_per_generated_token(tmp_path):
    slow = [replace(rec(0, 0, 4, 1, 100, predictions=(1.0, 2.0)), window_tokens=(50, 50),
                    window_compute_s=(2.0, 2.5)),
            replace(rec(1, 0, 4, 1, 20, predictions=(1.0,)), window_tokens=(20,), window_compute_s=(0.7,))]
    values = metrics_of(slow)
    assert values["engine_ms_per_token"] == pytest.approx(1e3 * 5.2 / 120)
    # Windows without a measured time, and unfinished jobs, do not count.
    unmeasured = replace(rec(2, 0, 4, 1, 20, predictions=(1.0,)), window_tokens=(20,), window_compute_s=(0.0,))
    cancelled = replace(rec(3, 0, math.nan, 0, 50, status="cancelled", predictions=(1.0,)), window_tokens=(50,),
                        window_compute_s=(9.0,))
    assert metrics_of([*slow, unmeasured, cancelled])["engine_ms_per_token"] == pytest.approx(1e3 * 5.2 / 120)
    assert values["mean_jct_token_times"] == pytest.approx(4 / (5.2 / 120))  # JCTs 4 and 4
    # The same jobs on an engine twice as fast: half the JCT, the same JCT in token-times.
    fast = [replace(r, record=replace(r.record, finish=r.record.finish / 2, jct=r.record.jct / 2),
                    window_compute_s=tuple(c / 2 for c in r.window_compute_s)) for r in slow]
    assert metrics_of(fast)["mean_jct_token_times"] == pytest.approx(values["mean_jct_token_times"])
    path = tmp_path / "records-fcfs.csv"
    write_live_records(slow, path)
    assert [r.window_compute_s for r in read_live_records(path)] == [(2.0, 2.5), (0.7,)]
    # Records written before the column existed read back without it; the table then shows "-".
    old = tmp_path / "old.csv"
    old.write_text("\n".join(",".join(row.split(",")[:-1]) for row in path.read_text().splitlines()) + "\n")
    back = read_live_records(old)
    assert back[0].window_compute_s == () and math.isnan(metrics_of(back)["engine_ms_per_token"])
    _, rows, _, _ = comparison_table({"fcfs": back})
    assert rows[0][-2:] == ["- (-/-)", "- (-/-)"]


def test_prompt_workload_is_the_same_for_the_same_seed(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"question {i}"}) for i in range(10)))
    a = build_workload(path, num=6, arrivals="gamma", rate=2.0, seed=7, max_tokens=32).items
    b = build_workload(path, num=6, arrivals="gamma", rate=2.0, seed=7, max_tokens=32).items
    c = build_workload(path, num=6, arrivals="gamma", rate=2.0, seed=8, max_tokens=32).items
    assert a == b and a != c
    assert a[0].offset_s == 0.0 and all(x.offset_s <= y.offset_s for x, y in itertools.pairwise(a))
    assert a[0].body["max_tokens"] == 32 and a[0].body["messages"][0]["role"] == "user"
    assert len(build_workload(path, num=25, arrivals="batch").items) == 25  # cycled


@pytest.mark.parametrize(("kind", "rate", "cv", "message"), [
    ("poisson", None, None, "need --rate"),
    ("gamma", None, 2.0, "--cv needs --rate"),
    ("gamma", -1.0, None, "--rate must be positive"),
    ("uniform", 1.0, None, "--arrivals must be one of"),
])
def test_bad_arrival_options_say_what_is_wrong(kind, rate, cv, message):
    with pytest.raises(WorkloadError, match=message):
        arrival_offsets(5, kind, rate, cv)


def test_compare_refuses_bad_options_with_a_clear_message(tmp_path):
    result = runner.invoke(app, ["compare", "--policies", "fcfs,fastest", "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown policy 'fastest'" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"nothing": 1}\n')
    result = runner.invoke(app, ["compare", "--prompts", str(bad), "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "needs 'prompt', 'text'" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["compare", "--arrivals", "poisson", "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "poisson arrivals need --rate" in result.output


def test_lengths_from_an_earlier_run_force_every_item_it_finished(tmp_path):
    from elis.replay.cli import _with_lengths_from

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(4)))
    work = build_workload(prompts, num=4, arrivals="poisson", rate=1.0, seed=3, max_tokens=128)
    earlier = tmp_path / "records-fcfs.csv"
    write_live_records([rec(0, 0, 1, 0, 17), rec(2, 0, 1, 0, 128), rec(3, 0, 1, 0, 9, status="failed")], earlier)
    forced = _with_lengths_from(work, earlier)
    assert [i.index for i in forced.items] == [0, 2]  # item 1 never ran there, item 3 failed
    assert [i.body["target_output_tokens"] for i in forced.items] == [17, 128]
    assert [i.body["max_tokens"] for i in forced.items] == [128, 128]  # the workload's cap, kept
    assert [i.offset_s for i in forced.items] == [work.items[0].offset_s, work.items[2].offset_s]  # same arrivals
    assert forced.info["jobs"] == 2 and forced.info["lengths_from"] == str(earlier)
    # a file that is not a records CSV, or a missing one, is a clear error
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    for path, message in [(tmp_path / "junk.csv", "not a records row"), (tmp_path / "none.csv", "no such file")]:
        result = runner.invoke(app, ["compare", "--prompts", str(prompts), "--lengths-from", str(path),
                                     "--out-dir", str(tmp_path / "out")])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_lengths_from_a_run_of_another_sample_is_refused(tmp_path):
    from elis.replay.cli import _sample_mismatch

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(6)))
    earlier = tmp_path / "earlier" / "records-fcfs.csv"
    earlier.parent.mkdir()
    write_live_records([rec(i, 0, 1, 0, 10 + i) for i in range(4)], earlier)
    options = {"workload": str(prompts), "num": 4, "seed": 1}
    (earlier.parent / "manifest.json").write_text(json.dumps({"options": options}))
    work = build_workload(prompts, num=4, arrivals="poisson", rate=1.0, seed=1, max_tokens=64)
    assert _sample_mismatch(work, earlier, {"workload": str(prompts), "num": 4, "seed": 1}) is None
    why = _sample_mismatch(work, earlier, {"workload": str(prompts), "num": 3, "seed": 2})
    assert "--num 4 there, 3 here" in why and "--seed 1 there, 2 here" in why
    assert "workload" in _sample_mismatch(work, earlier, {"workload": "other.jsonl", "num": 4, "seed": 1})
    result = runner.invoke(app, ["compare", "--prompts", str(prompts), "--num", "4", "--seed", "2",
                                 "--lengths-from", str(earlier), "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 2 and "drew another sample" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["compare", "--prompts", str(prompts), "--num", "3", "--seed", "1",
                                 "--bound-from", str(earlier), "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--bound-from" in result.output and "--num 4 there, 3 here" in result.output
    # another cap, or another set left out as refused (its sample digest), is another sample too
    sample = {"workload": str(prompts), "num": 4, "seed": 1, "max_tokens": 64}
    (earlier.parent / "manifest.json").write_text(json.dumps({"options": {**options, "max_tokens": 256},
                                                              "workload": work.info}))
    assert "--max-tokens 256 there, 64 here" in _sample_mismatch(work, earlier, sample)
    (earlier.parent / "manifest.json").write_text(json.dumps({"options": {**options, "max_tokens": 64},
                                                              "workload": {**work.info, "sample_digest": "x"}}))
    assert "left out" in _sample_mismatch(work, earlier, sample)
    (earlier.parent / "manifest.json").write_text(json.dumps({"options": {**options, "max_tokens": 64},
                                                              "workload": work.info}))
    assert _sample_mismatch(work, earlier, sample) is None
    # without a manifest beside the records there is nothing to check against
    (earlier.parent / "manifest.json").unlink()
    assert _sample_mismatch(work, earlier, {"workload": str(prompts), "num": 3, "seed": 2}) is None


def test_compare_and_report_are_registered_with_help():
    result = runner.invoke(app, ["--help"])
    assert "compare" in result.output and "report" in result.output
    for command in ("compare", "report", "replay", "demo"):
        assert runner.invoke(app, [command, "--help"]).exit_code == 0


def test_an_unreachable_api_ends_the_run_with_a_message_not_a_traceback():
    from elis.launch import free_port
    from elis.replay.live import run_live

    items = [WorkItem(0, 0.0, {"prompt": "hi", "max_tokens": 4})]
    result = run_live(f"http://127.0.0.1:{free_port()}", items, label="nobody-home", progress=False)
    assert result.error and "lost the API" in result.error
    assert result.records == [] and result.submitted == 0


def test_the_manifest_names_the_cpu_and_its_speed_flags(tmp_path):
    from elis.replay.compare import _cpu_model

    cpuinfo = tmp_path / "cpuinfo"
    block = "processor\t: {n}\nmodel name\t: Intel(R) Xeon(R) Processor @ 2.50GHz\nflags\t\t: fpu avx2 avx512f avx512_vnni\n\n"
    cpuinfo.write_text(block.format(n=0) + block.format(n=1))
    assert _cpu_model(cpuinfo) == {"cpu_model": "Intel(R) Xeon(R) Processor @ 2.50GHz",
                                   "cpu_flags": ["avx2", "avx512f", "avx512_vnni"]}
    cpuinfo.write_text(block.format(n=0).replace("avx512_vnni", "avx512_vnni avx512_bf16 amx_bf16 amx_tile"))
    assert _cpu_model(cpuinfo)["cpu_flags"][-3:] == ["avx512_bf16", "amx_bf16", "amx_tile"]
    assert _cpu_model(tmp_path / "missing") == {}


def test_rounds_rotate_the_order_and_name_their_runs():
    assert round_order(["fcfs", "sjf", "isrtf"], 1) == ["fcfs", "sjf", "isrtf"]
    assert round_order(["fcfs", "sjf", "isrtf"], 2) == ["sjf", "isrtf", "fcfs"]
    assert round_order(["fcfs", "sjf", "isrtf"], 4) == ["fcfs", "sjf", "isrtf"]
    assert run_name("isrtf", 1) == "isrtf" and run_name("isrtf", 2) == "isrtf.r2"
    assert policy_of_run("isrtf.r2") == "isrtf" and policy_of_run("srtf-oracle") == "srtf-oracle"
    assert policy_of_run("fcfs.rx") == "fcfs.rx"  # not a round suffix


def test_rounds_get_a_mean_row_and_ratios_to_fcfs_mean():
    fcfs1 = [rec(0, 0, 4, 1, 10), rec(1, 1, 9, 3, 30)]  # JCTs 4, 8: mean 6
    fcfs2 = [rec(0, 0, 6, 1, 10), rec(1, 1, 11, 3, 30)]  # JCTs 6, 10: mean 8
    sjf1 = [rec(0, 0, 2, 0, 10), rec(1, 1, 9, 4, 30)]  # JCTs 2, 8: mean 5
    sjf2 = [rec(0, 0, 3, 0, 10), rec(1, 1, 10, 4, 30)]  # JCTs 3, 9: mean 6
    runs = {"fcfs": fcfs1, "sjf": sjf1, "sjf.r2": sjf2, "fcfs.r2": fcfs2}
    _, _, csv_header, csv_rows = comparison_table(runs)
    by_run = {row[0]: dict(zip(csv_header, row)) for row in csv_rows}
    assert by_run["fcfs (mean of 2)"]["mean_jct"] == pytest.approx(7.0)
    assert by_run["sjf (mean of 2)"]["mean_jct"] == pytest.approx(5.5)
    assert by_run["sjf (mean of 2)"]["mean_jct_vs_fcfs"] == pytest.approx(5.5 / 7.0)
    assert by_run["fcfs.r2"]["mean_jct_vs_fcfs"] == pytest.approx(8 / 7.0)
    assert round_spread(runs) == {"fcfs": (6.0, 8.0), "sjf": (5.0, 6.0)}
    assert "fcfs 6.00-8.00 s (33%)" in table_note(runs)
    assert table_note({"fcfs": fcfs1}) == TABLE_NOTE


def test_sigterm_and_a_background_sigint_stop_a_comparison_as_ctrl_c_does():
    import os
    import signal

    from elis.replay.cli import _stop_cleanly_on_signals

    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `cmd &` in a non-interactive shell leaves
    try:
        _stop_cleanly_on_signals()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signum)
                time.sleep(1)  # the handler runs at the next bytecode; never reached
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])


def test_a_policy_held_in_the_guards_fcfs_fallback_is_named_under_the_table(tmp_path):
    from elis.replay.compare import ordering_notes, write_tables

    manifest_runs = {
        "fcfs": {"policy": "fcfs", "orderings": {"fcfs": 3}},
        "sjf": {"policy": "sjf", "orderings": {"fcfs (guard fallback)": 2, "sjf": 1}},
        "bound": {"policy": "srtf-oracle", "orderings": {"srtf-oracle": 3}},
        "old": {"policy": "isrtf"},  # a manifest written before orderings were kept
    }
    notes = ordering_notes(manifest_runs)
    assert len(notes) == 1 and notes[0].startswith("sjf ran 2 of 3 in order 'fcfs (guard fallback)'")
    text = write_tables(tmp_path, {"fcfs": [rec(0, 0, 4, 1, 10)]}, notes=notes)
    assert "Warning: sjf ran 2 of 3 in order 'fcfs (guard fallback)'" in text
    assert "Warning" in (tmp_path / "table.md").read_text()


def test_each_runs_same_work_reading_is_written_under_the_table(tmp_path):
    from elis.replay.compare import same_work_note, write_tables

    manifest_runs = {
        "fcfs": {"policy": "fcfs", "same_work": {"ratio": 1.0041, "jobs": 3}},
        "isrtf": {"policy": "isrtf", "same_work": {"ratio": 0.9123, "jobs": 3}},
        "old": {"policy": "isrtf"},  # a manifest written before the reading was kept
        "empty": {"policy": "sjf", "same_work": {}},  # the database could not be read
    }
    note = same_work_note(manifest_runs)
    assert note.startswith("Same work in FCFS order") and note.endswith(": fcfs 1.004, isrtf 0.912.")
    assert same_work_note({"old": {"policy": "isrtf"}}) == ""
    text = write_tables(tmp_path, {"fcfs": [rec(0, 0, 4, 1, 10)]}, readings=[note])
    assert "fcfs 1.004, isrtf 0.912." in text and "Warning" not in text


def test_a_same_work_reading_of_an_unreadable_database_is_empty_not_an_error(tmp_path):
    from elis.replay.compare import same_work_reading

    assert same_work_reading(f"sqlite:///{tmp_path / 'no-tables.sqlite3'}", "compare-x-fcfs") == {}


def test_an_isrtf_run_whose_guard_kept_preemption_off_is_named_under_the_table():
    from elis.replay.compare import ordering_notes

    off = {"preempting": False, "preempt_reason": "pre-emption off: fewer than 20 re-predictions"}
    manifest_runs = {
        "isrtf": {"policy": "isrtf", "orderings": {"isrtf": 3}, "guard_at_start": off},
        "isrtf.r2": {"policy": "isrtf", "orderings": {"isrtf": 3}, "guard_at_start": {**off, "preempting": True}},
        "sjf": {"policy": "sjf", "orderings": {"sjf": 3}, "guard_at_start": off},  # SJF never pre-empts anyway
        # Held in the guard's fallback throughout: no job was ordered by predictions, so nothing to say of them.
        "isrtf.r3": {"policy": "isrtf", "orderings": {"fcfs, loops last (guard fallback)": 3}, "guard_at_start": off},
    }
    notes = ordering_notes(manifest_runs)
    assert notes[0] == ("isrtf started with pre-emption on predictions off (pre-emption off: fewer than 20 "
                        "re-predictions): it ordered the queue by predictions but yielded only to starving jobs")
    assert len(notes) == 2 and notes[1].startswith("isrtf.r3 ran 3 of 3 in order 'fcfs, loops last (guard fallback)'")


def test_the_table_warns_when_runs_did_different_work(tmp_path):
    from elis.replay.compare import work_note, write_tables

    fcfs = [rec(0, 0, 4, 1, 100), rec(1, 1, 9, 3, 300)]  # mean 200 tokens
    same = [rec(0, 0, 3, 1, 102), rec(1, 1, 8, 3, 300)]  # +0.5%: within the tolerance
    shorter = [rec(0, 0, 3, 1, 80), rec(1, 1, 8, 3, 280)]  # mean 180: -10%
    assert work_note({"fcfs": fcfs, "isrtf": same}) == ""
    note = work_note({"fcfs": fcfs, "isrtf": shorter, "bound": same})
    assert "isrtf -10%" in note and "bound" not in note and "not order" in note
    assert work_note({"isrtf": shorter}) == ""  # nothing to compare with
    assert "Warning: the runs did different work" in write_tables(tmp_path, {"fcfs": fcfs, "isrtf": shorter})


def test_each_run_is_paired_with_the_fcfs_run_on_the_closest_engine_speed():
    from elis.replay.compare import speed_matched_note, speed_matched_pairs

    def m(mean, p99, speed):
        return {"mean_jct": mean, "p99_jct": p99, "engine_ms_per_token": speed,
                "mean_jct_token_times": 1e3 * mean / speed}

    metrics = {"fcfs": m(20.0, 50.0, 35.0), "isrtf": m(11.0, 36.0, 28.0), "fcfs.r2": m(14.0, 34.0, 30.0),
               "isrtf.r2": m(12.0, 40.0, 34.0),
               "bound": m(13.0, 51.0, float("nan"))}
    pairs = {name: (partner, ratios) for name, partner, ratios in speed_matched_pairs(metrics)}
    # FCFS runs are never paired; a run without a recorded speed is left out.
    assert set(pairs) == {"isrtf", "isrtf.r2"}
    assert pairs["isrtf"][0] == "fcfs.r2" and pairs["isrtf.r2"][0] == "fcfs"
    assert pairs["isrtf"][1]["mean_jct"] == pytest.approx(11 / 14)
    assert pairs["isrtf"][1]["p99_jct"] == pytest.approx(36 / 34)
    assert pairs["isrtf"][1]["mean_jct_token_times"] == pytest.approx((11 / 28) / (14 / 30))
    assert pairs["isrtf"][1]["speed_gap"] == pytest.approx(2 / 30)
    assert pairs["isrtf.r2"][1]["mean_jct"] == pytest.approx(12 / 20)
    assert speed_matched_pairs({"isrtf": m(11.0, 36.0, 28.0)}) == []
    # From records: an FCFS run alone gives no sentence.
    assert speed_matched_note({"fcfs": [rec(0, 0, 4, 1, 10)]}) == ""


class _WordTokenizer:
    """Counts a chat as its words plus 10 (the check's logic only needs a count)."""

    def __init__(self) -> None:
        self.calls = 0

    def encode_chat(self, messages):
        self.calls += 1
        return list(range(10 + sum(len(m["content"].split()) for m in messages)))


def test_requests_that_exceed_the_context_are_left_out_before_any_policy_runs(tmp_path):
    """The API refuses a prompt that, with max_tokens, exceeds the context (422), which would stop a comparison
    midway: such requests are left out of the file first, counted, and only long prompts are tokenized."""
    from elis.replay.sources import ContextCheck

    path = tmp_path / "p.jsonl"
    rows = [{"prompt": f"short {i}"} for i in range(8)] + [{"prompt": "word " * 600}, {"prompt": "w " * 80}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    words = _WordTokenizer()
    context = ContextCheck(max_model_len=512, tokenizer_factory=lambda: words)
    work = build_workload(path, arrivals="batch", max_tokens=256, context=context)
    assert work.info["left_out_too_long"] == work.info["left_out"] == 1 and len(work.items) == 9
    assert "exceed the model's context of 512 tokens" in work.info["left_out_first_reason"]
    assert all("word word" not in item.body["messages"][0]["content"] for item in work.items)
    assert words.calls == 1 and context.tokenized == 1  # "w " * 80: 160 bytes, surely fits, never counted
    # every prompt fits: the same seeded sample as without the check
    fitting = tmp_path / "f.jsonl"
    fitting.write_text("\n".join(json.dumps(r) for r in rows[:8]))
    plain = build_workload(fitting, num=5, arrivals="gamma", rate=1.0, seed=3, max_tokens=64).items
    checked = build_workload(fitting, num=5, arrivals="gamma", rate=1.0, seed=3, max_tokens=64,
                             context=ContextCheck(512, _WordTokenizer)).items
    assert plain == checked
    with pytest.raises(WorkloadError, match="the API would refuse every request; the first: .* context of 512"):
        build_workload(path, arrivals="batch", max_tokens=600, context=ContextCheck(512, _WordTokenizer))
    with pytest.raises(WorkloadError, match="max_tokens 300 is above the service's limit of 256"):
        build_workload(path, arrivals="batch", max_tokens=300,
                       context=ContextCheck(2048, _WordTokenizer, max_tokens_limit=256))


def test_a_trace_row_is_judged_by_the_max_tokens_the_api_holds_it_to(tmp_path):
    """A forced length replaces max_tokens in the body (the API's cap is then the length), so a row with a
    large max_tokens of its own but a short forced output is kept; a trace whose first row is left out still
    starts at 0."""
    from elis.replay.sources import ContextCheck

    path = tmp_path / "t.jsonl"
    rows = [{"arrival": 0.0, "prompt": "x " * 900},  # left out: 900 words + 10 + 300 > 1024
            {"arrival": 1.0, "prompt": "a", "max_tokens": 4000, "output_tokens": 50},
            {"arrival": 2.0, "prompt": "b"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    work = build_workload(path, max_tokens=300, context=ContextCheck(1024, _WordTokenizer))
    assert work.info["left_out"] == 1 and [i.offset_s for i in work.items] == [0.0, 1.0]
    assert work.items[0].body["target_output_tokens"] == 50


@pytest.mark.slow
def test_the_context_check_agrees_with_the_api_on_the_served_tokenizer():
    """With the served model's tokenizer and chat template (prepared on first need), the check leaves out a
    request exactly when the API's admission rule (prompt tokens + max_tokens > max_model_len) would refuse
    it, at and around the boundary."""
    from elis.config import Settings
    from elis.replay.cli import _context_check
    from elis.replay.readers import Request

    check = _context_check(Settings())
    tokenizer = check._factory()
    budget_tokens = []
    for words in (100, 300, 340, 360, 380, 400, 800):
        request = Request(None, ({"role": "user", "content": "the cat sat on the mat. " * words},))
        tokens = len(tokenizer.encode_chat(list(request.messages)))
        budget_tokens.append(tokens)
        for max_tokens in (64, 256, 512):
            fits = check.refusal(request.messages, max_tokens) is None
            assert fits == (tokens + max_tokens <= check.max_model_len), (words, max_tokens)
    assert min(budget_tokens) + 512 <= check.max_model_len < max(budget_tokens) + 64  # both sides were tried


def test_requests_the_api_schema_refuses_are_left_out_with_the_first_reason(tmp_path):
    """A public set's odd record (an empty turn, a NUL character) would get a 422 midway through a run: it is
    left out before any policy runs, and the first reason is kept for the console and the manifest."""
    from elis.replay.sources import ContextCheck

    path = tmp_path / "p.jsonl"
    rows = [{"prompt": "fine"}, {"messages": [{"role": "user", "content": ""}]}, {"prompt": "nul \u0000 here"},
            {"prompt": "also fine"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    work = build_workload(path, arrivals="batch", max_tokens=64, context=ContextCheck(2048, _WordTokenizer))
    assert [i.body["messages"][0]["content"] for i in work.items] == ["fine", "also fine"]
    assert work.info["left_out"] == 2 and work.info["left_out_too_long"] == 0
    assert work.info["left_out_first_reason"].startswith("messages.0.content")


def test_replay_leaves_out_what_the_api_would_refuse_and_reports_a_down_api_without_a_traceback(tmp_path):
    """`elis replay`: a prompt the API would refuse (here a NUL character) is left out with a warning rather
    than stop the replay midway; an API that does not answer is one clear line and exit code 1."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n{"prompt": "nul \\u0000"}\n')
    result = runner.invoke(app, ["replay", "--base-url", "http://127.0.0.1:9", "--prompts", str(prompts)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "left out 1 of 2 prompts that the API would refuse" in result.output
    assert "cannot reach the API at http://127.0.0.1:9" in result.output
