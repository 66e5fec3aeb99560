"""The live load sweep: the same comparison at several arrival rates; mean and p99 JCT against the rate."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from elis.replay.compare import metrics_of
from elis.replay.report import markdown_table, plot_lines
from elis.replay.runs import load_run

SWEEP_METRICS = (("mean_jct", "mean JCT s"), ("p99_jct", "p99 JCT s"), ("mean_queuing_delay", "mean queuing s"),
                 ("throughput_tps", "tokens/s"))


def sweep_rows(run_dirs: Sequence[Path]) -> tuple[list[float], dict[str, dict[float, dict[str, float]]]]:
    """Rates (ascending) and, per run name (policy or bound), the metrics at each rate."""
    by_name: dict[str, dict[float, dict[str, float]]] = {}
    rates = set()
    for run_dir in run_dirs:
        saved = load_run(run_dir)
        if saved.rate is None:
            continue
        rates.add(saved.rate)
        for name, records in saved.runs.items():
            by_name.setdefault(name, {})[saved.rate] = metrics_of(records)
    return sorted(rates), by_name


def write_sweep(out_dir: Path, run_dirs: Sequence[Path]) -> str:
    """sweep.md, sweep.csv, sweep_mean_jct.png and sweep_p99_jct.png in `out_dir`; returns the Markdown."""
    rates, by_name = sweep_rows(run_dirs)
    if not rates:
        return "sweep: no finished rate"
    header = ["rate jobs/s", "run"] + [title for _, title in SWEEP_METRICS]
    rows = []
    for rate in rates:
        for name, per_rate in by_name.items():
            if rate in per_rate:
                rows.append([f"{rate:g}", name] + [f"{per_rate[rate][key]:.2f}" for key, _ in SWEEP_METRICS])
    with open(out_dir / "sweep.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rate", "run"] + [key for key, _ in SWEEP_METRICS])
        for rate in rates:
            for name, per_rate in by_name.items():
                if rate in per_rate:
                    writer.writerow([rate, name] + [per_rate[rate][key] for key, _ in SWEEP_METRICS])
    for key, title in (("mean_jct", "mean JCT"), ("p99_jct", "p99 JCT")):
        series = {name: [per_rate.get(r, {}).get(key, math.nan) for r in rates] for name, per_rate in by_name.items()}
        plot_lines(rates, series, out_dir / f"sweep_{key}.png", xlabel="arrival rate (jobs/s)",
                   ylabel=f"{title} (s)", title=f"{title} against load, live stack")
    text = markdown_table(header, rows)
    (out_dir / "sweep.md").write_text(text + "\n")
    return text
