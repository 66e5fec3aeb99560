"""`elis compare` end to end on the live stack: FCFS and ISRTF on the same six jobs, then the bound; then
`elis report` on the saved run."""

from __future__ import annotations

import csv
import json
import math

import pytest
from typer.testing import CliRunner

from elis.cli import app
from elis.replay.live import read_live_records

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_compare_runs_policies_and_the_bound_on_the_same_workload(stack, tmp_path):
    for policy in ("fcfs", "isrtf", "srtf-oracle"):
        stack.api(policy).close()  # start the stack's API for each policy; compare uses them by URL
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in (
        "Name three rivers.", "Write a haiku about rain.", "Explain what a compiler does.",
        "Say hello.", "List the planets of the solar system.", "Describe a cat in two sentences.")))
    out = tmp_path / "run"
    urls = [arg for policy in ("fcfs", "isrtf", "srtf-oracle") for arg in ("--base-url", stack.apis[policy][1])]
    result = CliRunner().invoke(app, [
        "compare", "--workload", str(prompts), "--num", "6", "--arrivals", "gamma", "--rate", "4", "--seed", "1",
        "--max-tokens", "64", "--policies", "fcfs,isrtf", "--out-dir", str(out), "--database-url", stack.db_url,
        *urls,
    ])
    assert result.exit_code == 0, result.output

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["git"]["commit"]
    assert manifest["machine"]["cpu_count"] >= 1 and manifest["predictor"]["sha256"]
    assert set(manifest["runs"]) == {"fcfs", "isrtf", "bound"}
    # The outcome guard's reading of each run on its own jobs: an FCFS run is its own counterfactual, up to the
    # replay's window-end gaps.
    for run in manifest["runs"].values():
        assert run["same_work"]["jobs"] == 6 and run["same_work"]["slots"] >= 1
    assert manifest["runs"]["fcfs"]["same_work"]["ratio"] == pytest.approx(1.0, abs=0.1)
    assert "Same work in FCFS order" in (out / "table.md").read_text()
    # Every job admitted under its own policy's order (the stack's guard does not start in fallback).
    assert manifest["runs"]["isrtf"]["orderings"] == {"isrtf": 6}
    assert manifest["runs"]["bound"]["orderings"] == {"srtf-oracle": 6}
    # The guard's state as each run started, read from the live API's /v1/stats.
    guard_at_start = manifest["runs"]["isrtf"]["guard_at_start"]
    assert guard_at_start["ordering"] == "isrtf" and isinstance(guard_at_start["preempting"], bool)
    assert guard_at_start["preempt_reason"]
    assert guard_at_start["prefill_weight"] >= 0 and guard_at_start["prefill_weight_source"]
    assert manifest["warmup"]["jobs"] == 6 and manifest["warmup"]["error"] is None  # every prompt, not measured
    with open(out / "table.csv", newline="") as handle:
        table = {row["run"]: row for row in csv.DictReader(handle)}
    assert set(table) == {"fcfs", "isrtf", "bound"}
    assert all(row["jobs"] == "6" for row in table.values())
    assert float(table["fcfs"]["mean_jct_vs_fcfs"]) == 1.0 and float(table["bound"]["mean_jct_vs_bound"]) == 1.0

    fcfs = {r.item: r for r in read_live_records(out / "records-fcfs.csv")}
    isrtf = {r.item: r for r in read_live_records(out / "records-isrtf.csv")}
    bound = {r.item: r for r in read_live_records(out / "records-bound.csv")}
    assert set(fcfs) == set(isrtf) == set(bound) == set(range(6))
    # Same workload: same prompts under every policy; the bound forces FCFS's true lengths.
    assert [fcfs[i].record.num_prompt_tokens for i in range(6)] == [isrtf[i].record.num_prompt_tokens for i in range(6)]
    assert [bound[i].record.num_output_tokens for i in range(6)] == [fcfs[i].record.num_output_tokens for i in range(6)]
    assert all(r.record.policy == "srtf-oracle" for r in bound.values())
    # A forced job keeps the workload's max_tokens (64) as its cap, so its admission prediction is the natural
    # job's, clipped at 64, never at its known length (that would hand the scheduler the answer). ISRTF carries
    # the predictor's estimates: at admission, and after each window the job went on from.
    for i in range(6):
        assert bound[i].initial_prediction == pytest.approx(fcfs[i].initial_prediction, rel=1e-3, abs=0.5)
        assert bound[i].initial_prediction <= 64
    assert all(not math.isnan(r.initial_prediction) for r in isrtf.values())
    for r in isrtf.values():
        assert sum(r.window_tokens) == r.record.num_output_tokens
        assert all(not math.isnan(p) for p in r.predictions[:-1])

    report = CliRunner().invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output
    for name in ("jct_cdf.png", "jct_by_length.png", "queuing_over_time.png", "predictions.md"):
        assert (out / "report" / name).stat().st_size > 0
