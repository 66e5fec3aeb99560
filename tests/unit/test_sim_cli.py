"""`elis simulate` commands on tiny workloads."""

from __future__ import annotations

from typer.testing import CliRunner

from elis.simulator.cli import simulate_app

runner = CliRunner()


def test_run_prints_a_report_row_per_policy(tmp_path):
    result = runner.invoke(simulate_app, ["run", "-p", "fcfs,isrtf", "--jobs", "200", "-n", "2", "-b", "2",
                                          "--records", str(tmp_path / "r.csv")])
    assert result.exit_code == 0, result.output
    assert "fcfs" in result.output and "isrtf" in result.output
    assert (tmp_path / "r_isrtf.csv").read_text().count("\n") == 201


def test_load_sweep_writes_a_png_and_tables(tmp_path):
    out = tmp_path / "sweep.png"
    result = runner.invoke(simulate_app, ["load-sweep", "--loads", "0.2,0.8", "-p", "fcfs,sjf", "--jobs", "300",
                                          "-n", "1", "-b", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists() and out.with_suffix(".md").read_text().startswith("| load | fcfs | sjf |")


def test_scale_and_levels_loss_and_bench_run(tmp_path):
    scale = runner.invoke(simulate_app, ["scale", "--workers", "1,2", "--combos", "shared:fcfs",
                                         "--jobs-per-worker", "40", "--out", str(tmp_path / "s.png")])
    assert scale.exit_code == 0, scale.output
    levels = runner.invoke(simulate_app, ["levels-loss", "--levels", "3", "-p", "sjf", "--jobs", "200",
                                          "--out", str(tmp_path / "l.md")])
    assert levels.exit_code == 0, levels.output
    assert "quantile" in (tmp_path / "l.md").read_text()
    bench = runner.invoke(simulate_app, ["bench", "--jobs", "300", "-n", "2"])
    assert bench.exit_code == 0 and '"jobs_per_s"' in bench.output


def test_an_unknown_policy_fails_with_a_clear_message():
    result = runner.invoke(simulate_app, ["run", "-p", "lottery", "--jobs", "10"])
    assert result.exit_code != 0


def test_a_bad_trace_is_a_clear_error_and_a_gzip_one_reads(tmp_path):
    """--trace: a row that is not TIMESTAMP, ContextTokens, GeneratedTokens names its line (exit code 2); a
    gzip-compressed trace reads like the plain one."""
    import gzip

    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,many,3\n")
    result = runner.invoke(simulate_app, ["run", "-p", "fcfs", "--jobs", "10", "--trace", str(bad)])
    text = " ".join(result.output.replace("│", " ").split())  # the error box wraps lines
    assert result.exit_code == 2 and "line 2: not a row of TIMESTAMP" in text and "Traceback" not in text
    rows = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:15:{i:02d}.5,{100 + i},{20 + i}\n" for i in range(30))
    packed = tmp_path / "t.csv.gz"
    packed.write_bytes(gzip.compress(rows.encode()))
    result = runner.invoke(simulate_app, ["run", "-p", "fcfs", "--jobs", "20", "-n", "1", "--trace", str(packed)])
    assert result.exit_code == 0, result.output
