"""`elis report RUN_DIR...`: rebuild the tables and plots of saved `elis compare` runs.

Per run folder (into RUN_DIR/report/ unless --out-dir): the comparison table, the JCT CDF per policy, the mean
JCT by true output-length bucket, the queuing delay over time and, when the run had a predictor, the predicted
against true remaining length per step with Kendall's tau. A sweep folder (rate-* subfolders) also gets its
sweep table and plots back.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from elis.replay import analysis
from elis.replay.compare import BOUND_POLICY, comparison_table, ordering_notes, same_work_note, write_tables
from elis.replay.live import LiveRecord
from elis.replay.report import markdown_table, print_table
from elis.replay.runs import RunDirError, SavedRun, load_run


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def _figure(path: Path, title: str, xlabel: str, ylabel: str, size: tuple[float, float] = (6.5, 4.2),
            grid_axis: str = "both") -> Iterator:
    """Axes to draw on; on exit the labels, grid and legend every report plot has, then the PNG at `path`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=size, dpi=110)
    try:
        yield ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3, axis=grid_axis)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def plot_jct_cdf(runs: dict[str, list[LiveRecord]], path: Path, title: str) -> None:
    with _figure(path, title, "job completion time (s)", "fraction of jobs done") as ax:
        for name, records in runs.items():
            jcts = sorted(r.record.jct for r in records if r.record.status == "done")
            if jcts:
                ax.step(jcts, [(i + 1) / len(jcts) for i in range(len(jcts))], where="post", label=name)


def plot_jct_by_length(table: dict[str, list[tuple[str, int, float]]], path: Path, title: str) -> None:
    present = {b for rows in table.values() for b, _, _ in rows}
    edges = analysis.LENGTH_EDGES
    buckets = [label for label in (analysis.bucket_label(lo, hi) for lo, hi in itertools.pairwise(edges))
               if label in present]
    order = {b: i for i, b in enumerate(buckets)}
    with _figure(path, title, "true output length (tokens)", "mean JCT (s)", grid_axis="y") as ax:
        width = 0.8 / max(1, len(table))
        for k, (name, rows) in enumerate(table.items()):
            xs = [order[b] + k * width for b, _, _ in rows if b in order]
            ax.bar(xs, [mean for b, _, mean in rows if b in order], width=width, label=name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(buckets))], buckets)


def plot_queuing(runs: dict[str, list[LiveRecord]], path: Path, title: str) -> None:
    with _figure(path, title, "arrival (s from the first job)", "queuing delay (s)") as ax:
        for name, records in runs.items():
            points = analysis.queuing_over_time(records)
            if points:
                ax.plot([t for t, _ in points], [q for _, q in points], marker="o", markersize=3, linewidth=1,
                        label=name)


def plot_predictions(points: dict[str, list[analysis.PredictionPoint]], path: Path, title: str) -> None:
    with _figure(path, title, "true remaining tokens", "predicted remaining tokens", size=(5.5, 5)) as ax:
        top = 1.0
        for name, pts in points.items():
            ax.scatter([p.true for p in pts], [p.predicted for p in pts], s=10, alpha=0.6, label=name)
            top = max([top] + [p.true for p in pts] + [p.predicted for p in pts])
        ax.plot([0, top], [0, top], linestyle="--", color="grey", label="exact")


def _write(out_dir: Path, stem: str, header: Sequence[str], rows: Sequence[Sequence], note: str = "") -> str:
    text = markdown_table(header, rows)
    (out_dir / f"{stem}.md").write_text(text + "\n" + (f"\n{note}\n" if note else ""))
    with open(out_dir / f"{stem}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return text


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def report_run(saved: SavedRun, out_dir: Path) -> list[Path]:
    """All tables and plots of one saved run into `out_dir`; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    title = saved.label
    write_tables(out_dir, saved.runs, title=f"elis compare: {title}",
                 notes=ordering_notes(saved.manifest.get("runs", {})),
                 readings=[same_work_note(saved.manifest.get("runs", {}))])
    header, rows, _, _ = comparison_table(saved.runs)
    print_table(header, rows, title=title)
    plot_jct_cdf(saved.runs, out_dir / "jct_cdf.png", f"JCT distribution per policy ({title})")

    by_length = {name: analysis.jct_by_length(records) for name, records in saved.runs.items()}
    _write(out_dir, "jct_by_length", ["run", "true output tokens", "jobs", "mean JCT s"],
           [[name, bucket, jobs, f"{mean:.2f}"] for name, rows_ in by_length.items() for bucket, jobs, mean in rows_])
    plot_jct_by_length(by_length, out_dir / "jct_by_length.png", f"mean JCT by true output length ({title})")
    plot_queuing(saved.runs, out_dir / "queuing_over_time.png", f"queuing delay over time ({title})")
    written = [out_dir / n for n in ("table.md", "table.csv", "jct_cdf.png", "jct_by_length.md", "jct_by_length.csv",
                                     "jct_by_length.png", "queuing_over_time.png")]

    # The oracle schedules by the true length: its stored admission prediction is only clamped to the forced
    # length, so it says nothing about the predictor.
    points = {name: analysis.prediction_points(records) for name, records in saved.runs.items()
              if not any(r.record.policy == BOUND_POLICY for r in records)}
    points = {name: pts for name, pts in points.items() if pts}
    if points:
        rows_ = [[name, step, n, _fmt(mae), _fmt(tau)] for name, pts in points.items()
                 for step, n, mae, tau in analysis.prediction_table(pts)]
        text = _write(out_dir, "predictions", ["run", "step", "predictions", "MAE tokens", "Kendall tau"], rows_)
        print(text)
        plot_predictions(points, out_dir / "predictions.png", f"predicted vs true remaining length ({title})")
        written += [out_dir / "predictions.md", out_dir / "predictions.csv", out_dir / "predictions.png"]
        settings = _run_settings(saved.manifest)
        verdicts = {name: analysis.guard_verdict(saved.runs[name], settings) for name in points}
        text = _write(out_dir, "guard", GUARD_HEADER, [_guard_row(name, v) for name, v in verdicts.items()],
                      note=GUARD_NOTE)
        print(text)
        written += [out_dir / "guard.md", out_dir / "guard.csv"]
    return written


GUARD_HEADER = ["run", "finished jobs", "admission tau", "admission bias", "re-prediction tau (pooled)",
                "re-prediction bias", "yield precision (pairs)", "order", "pre-emption on predictions"]
GUARD_NOTE = ("What the quality guard, with the run's settings, decides from each run's finished jobs (as one refresh "
              "of the live guard would): the order trusted or FCFS, and pre-emption on predictions on or off. Bias: "
              "mean predicted / mean true remaining tokens. Yield precision: of the prediction pairs that would make "
              "a running job yield at the margin, the share where the head was truly shorter. A forced-length "
              "replay's live guard ignores its jobs; with lengths recorded from a natural run this is the verdict "
              "it would have reached on them.")
# The manifest's settings that change the guard's verdict.
GUARD_SETTINGS = ("guard", "guard_threshold", "guard_hysteresis", "guard_min_jobs", "guard_start_in_fallback",
                  "guard_preempt_precision", "yield_margin", "yield_uncertainty", "calibrate_steps", "policy")


def _run_settings(manifest: dict):
    from elis.config import Settings

    saved = manifest.get("settings") or {}
    return Settings().model_copy(update={key: saved[key] for key in GUARD_SETTINGS if key in saved})


def _guard_row(name: str, verdict: analysis.GuardVerdict) -> list:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    precision = "-" if verdict.yield_precision is None else f"{verdict.yield_precision:.2f} ({verdict.yield_pairs})"
    return [name, verdict.jobs, fmt(verdict.admission_tau), fmt(verdict.admission_bias), fmt(verdict.pooled_tau),
            fmt(verdict.pooled_bias), precision, "trusted" if verdict.trusted else "FCFS (fallback)",
            "on" if verdict.preempting else "off"]


def report_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="folders written by `elis compare` (a sweep folder too)")],
    out_dir: Annotated[Path | None, typer.Option(help="where to write [RUN_DIR/report for each folder]")] = None,
) -> None:
    """Rebuild the tables and plots of saved `elis compare` runs: the comparison table, the JCT CDF per policy,
    mean JCT by true output-length bucket, queuing delay over time and, when the run had a predictor, predicted
    vs true remaining length per step with Kendall's tau. PNG plots, Markdown and CSV tables."""
    from elis.replay.sweep import write_sweep

    for run_dir in run_dirs:
        rate_dirs = sorted(p for p in Path(run_dir).glob("rate-*") if p.is_dir())
        targets = rate_dirs or [Path(run_dir)]
        try:
            saved_runs = [load_run(t) for t in targets]
        except RunDirError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(code=2) from None
        for saved in saved_runs:
            dest = (out_dir / saved.label if len(saved_runs) > 1 or len(run_dirs) > 1 else out_dir) if out_dir \
                else saved.path / "report"
            files = report_run(saved, dest)
            typer.echo(f"{saved.path}: wrote {len(files)} files to {dest}")
        if rate_dirs:
            dest = out_dir / Path(run_dir).name if out_dir and len(run_dirs) > 1 else out_dir or Path(run_dir)
            dest.mkdir(parents=True, exist_ok=True)
            typer.echo(write_sweep(dest, rate_dirs))
            typer.echo(f"sweep: {dest / 'sweep.md'}, {dest / 'sweep_mean_jct.png'}, {dest / 'sweep_p99_jct.png'}")
