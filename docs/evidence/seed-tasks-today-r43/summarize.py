"""Run 43's table: each run's mean JCT against the mean of the two FCFS runs, its same-work reading, p99, the
short and the capped jobs, the engine's speed and the admission tau. Reads the run folders `elis compare` wrote.

    .venv/bin/python docs/evidence/seed-tasks-today-r43/summarize.py \
        runs/evidence/r43-{natural,fcfs-1,isrtf-1,isrtf-2,fcfs-2}
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

from elis.scheduling.guard import rank_tau

SHORT_TOKENS = 32  # "short": jobs that end within this many tokens
CAP_TOKENS = 512  # the workload's max_tokens


def runs_of(folder: Path):
    """(label, policy, records rows, the manifest's run entry, the table.csv row) of each run in a folder."""
    manifest = json.loads((folder / "manifest.json").read_text())
    table = {row["run"]: row for row in csv.DictReader((folder / "table.csv").open())}
    for policy, entry in manifest["runs"].items():
        rows = list(csv.DictReader((folder / entry["records"]).open()))
        yield f"{folder.name}/{policy}", policy, rows, entry, table.get(policy, {})


def main(folders: list[Path]) -> None:
    runs = [run for folder in folders for run in runs_of(folder)]
    fcfs_means = [statistics.mean(float(r["jct"]) for r in rows) for label, policy, rows, _, _ in runs
                  if policy == "fcfs" and "natural" not in label]
    fcfs_mean = statistics.mean(fcfs_means) if fcfs_means else float("nan")
    print("| run | engine ms/token | mean JCT s | vs FCFS (mean of its runs) | same work in FCFS order | p99 s "
          f"| jobs under {SHORT_TOKENS} tokens: mean JCT s | jobs at the cap: mean JCT s | admission tau |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, policy, rows, entry, table in runs:
        jct = [float(r["jct"]) for r in rows]
        out = [int(r["num_output_tokens"]) for r in rows]
        short = [j for j, n in zip(jct, out) if n < SHORT_TOKENS]
        capped = [j for j, n in zip(jct, out) if n >= CAP_TOKENS]
        predicted = [(float(r["initial_prediction"]), n) for r, n in zip(rows, out)
                     if r["initial_prediction"] not in ("", "nan")]
        tau = rank_tau([p for p, _ in predicted], [n for _, n in predicted]) if len(predicted) > 1 else None
        same = (entry.get("same_work") or {}).get("ratio")
        p99 = float(table.get("p99_jct", "nan"))
        ms = float(table.get("engine_ms_per_token", "nan"))
        print(f"| {label} | {ms:.1f} | {statistics.mean(jct):.2f} | {statistics.mean(jct) / fcfs_mean:.3f}x "
              f"| {same if same is not None else '-'} | {p99:.1f} "
              f"| {statistics.mean(short):.1f} ({len(short)}) | {statistics.mean(capped):.1f} ({len(capped)}) "
              f"| {'-' if tau is None else f'{tau:.3f}'} |")


if __name__ == "__main__":
    main([Path(arg) for arg in sys.argv[1:]])
