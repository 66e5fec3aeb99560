"""Where a run's time went after its jobs first started: re-queued jobs (yields) and their extra waits.

Usage: python requeue.py */records-*.csv ../seed-tasks-leakfree-r21/*/records-*.csv > requeue.md

Reads the per-job records `elis compare` writes. A job's queuing delay is all its time in the queue; its first
wait is `first_start - arrival`; the rest is time spent queued again after yielding its slot. Prints one
Markdown row per file: jobs re-queued, their mean extra wait, the extra wait per job of the run (what it adds
to the run's mean JCT), mean JCT, mean JCT of the jobs under 100 output tokens and of those at the 512 cap.
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path


def row(path: Path) -> str:
    jobs = list(csv.DictReader(path.open()))
    extra = [float(j["queuing_delay"]) - (float(j["first_start"]) - float(j["arrival"])) for j in jobs]
    requeued = [e for e in extra if e > 0.5]
    short = [float(j["jct"]) for j in jobs if int(j["num_output_tokens"]) < 100]
    capped = [float(j["jct"]) for j in jobs if int(j["num_output_tokens"]) >= 512]
    mean = statistics.mean
    label = f"{path.resolve().parent.parent.name}/{path.parent.name}/{path.stem.removeprefix('records-')}"
    return (f"| {label} | {len(jobs)} | {len(requeued)} | "
            f"{mean(requeued) if requeued else 0:.1f} | {sum(extra) / len(jobs):.2f} | "
            f"{mean(float(j['jct']) for j in jobs):.2f} | {mean(short) if short else float('nan'):.2f} | "
            f"{mean(capped) if capped else float('nan'):.2f} |")


if __name__ == "__main__":
    print("| run | jobs | jobs re-queued | their mean extra wait s | extra wait per job s | mean JCT s | "
          "mean JCT, < 100 tokens | mean JCT, at the cap |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in sys.argv[1:]:
        print(row(Path(name)))
