"""Per-job records and the report every replay prints: the live replay and the simulator share it."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One finished (or failed) job. Times are seconds on one clock.

    `queuing_delay` is the total time the job waited in the queue over all its windows (for a non-preemptive
    policy, `first_start - arrival`); `max_wait` is its longest single wait (what aging bounds). `arrival` is
    when the service stored and queued the job; `admission` the wait before that, from the request's receipt
    (tokenizing, the length prediction), which `jct` includes: `jct = finish - arrival + admission`.
    """

    job_id: str
    policy: str
    arrival: float
    first_start: float
    finish: float
    jct: float
    queuing_delay: float
    num_prompt_tokens: int
    num_output_tokens: int
    num_windows: int
    status: str = "done"
    max_wait: float = 0.0
    admission: float = 0.0


@dataclass(frozen=True)
class Summary:
    """Aggregate metrics of one run."""

    num_jobs: int
    mean_jct: float
    p50_jct: float
    p90_jct: float
    p99_jct: float
    mean_queuing_delay: float
    max_wait: float
    throughput_rps: float
    throughput_tps: float
    makespan: float
    mean_admission: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    position = q / 100 * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def summarize(records: Iterable[JobRecord]) -> Summary:
    """Mean/p50/p90/p99 JCT, mean queuing delay, longest wait, throughput in requests/s and tokens/s."""
    done = [r for r in records if r.status == "done"]
    if not done:
        nan = math.nan
        return Summary(0, nan, nan, nan, nan, nan, nan, 0.0, 0.0, 0.0, nan)
    jcts = sorted(r.jct for r in done)
    makespan = max(r.finish for r in done) - min(r.arrival - r.admission for r in done)
    span = makespan if makespan > 0 else math.inf
    return Summary(
        num_jobs=len(done),
        mean_jct=sum(jcts) / len(jcts),
        p50_jct=percentile(jcts, 50),
        p90_jct=percentile(jcts, 90),
        p99_jct=percentile(jcts, 99),
        mean_queuing_delay=sum(r.queuing_delay for r in done) / len(done),
        max_wait=max(r.max_wait for r in done),
        throughput_rps=len(done) / span,
        throughput_tps=sum(r.num_output_tokens for r in done) / span,
        makespan=makespan,
        mean_admission=sum(r.admission for r in done) / len(done),
    )


SUMMARY_COLUMNS = (
    ("num_jobs", "jobs", "{:d}"),
    ("mean_jct", "mean JCT s", "{:.2f}"),
    ("p50_jct", "p50 s", "{:.2f}"),
    ("p90_jct", "p90 s", "{:.2f}"),
    ("p99_jct", "p99 s", "{:.2f}"),
    ("mean_queuing_delay", "mean queue s", "{:.2f}"),
    ("max_wait", "max wait s", "{:.1f}"),
    ("throughput_rps", "req/s", "{:.2f}"),
    ("throughput_tps", "tok/s", "{:.0f}"),
)


def summary_rows(summaries: Mapping[str, Summary]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows, one per labelled summary."""
    header = ["run"] + [title for _, title, _ in SUMMARY_COLUMNS]
    rows = [[label] + [fmt.format(getattr(s, key)) for key, _, fmt in SUMMARY_COLUMNS]
            for label, s in summaries.items()]
    return header, rows


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """A rich table on the console."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for index, name in enumerate(header):
        table.add_column(str(name), justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console = Console()
    if not console.is_terminal:  # logs and CI: do not squeeze the table into 80 columns
        console = Console(width=160)
    console.print(table)


def print_summaries(summaries: Mapping[str, Summary], title: str | None = None) -> None:
    """The standard report: one row per run."""
    print_table(*summary_rows(summaries), title=title)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The same table as GitHub Markdown (for docs)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_records_csv(records: Iterable[JobRecord], path: str | Path) -> None:
    """One row per job, columns in `JobRecord` field order."""
    names = [f.name for f in fields(JobRecord)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for record in records:
            writer.writerow([getattr(record, name) for name in names])


def read_records_csv(path: str | Path) -> list[JobRecord]:
    """Records written by `write_records_csv` (extra columns, such as a live run's predictions, are skipped)."""
    casts = {f.name: f.type for f in fields(JobRecord)}
    out = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            values: dict[str, Any] = {}
            for name, text in row.items():
                if name not in casts:
                    continue
                kind = casts[name]
                values[name] = int(text) if kind == "int" else float(text) if kind == "float" else text
            out.append(JobRecord(**values))
    return out


def write_table_csv(header: Sequence[str], rows: Sequence[Sequence[Any]], path: str | Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def plot_lines(x: Sequence[float], series: Mapping[str, Sequence[float]], path: str | Path, *, xlabel: str,
               ylabel: str, title: str, logy: bool = False, reference: Sequence[float] | None = None,
               reference_label: str = "linear") -> Path:
    """A line plot, one line per series (matplotlib Agg backend), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for label, ys in series.items():
        ax.plot(x, ys, marker="o", markersize=3.5, label=label)
    if reference is not None:
        ax.plot(x, reference, linestyle="--", color="grey", label=reference_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
