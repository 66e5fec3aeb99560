"""Run 31: each run's mean JCT for the jobs that ran to max_tokens (the loops) and for the rest, and how many
jobs waited again after they first started (re-queued), from the records CSVs.

Usage: python docs/evidence/gsm8k-loops-last-r31/by_group.py RUN_DIR
"""
import csv
import statistics
import sys
from pathlib import Path

run_dir = Path(sys.argv[1])
print("| run | jobs | mean JCT s | ran to max_tokens: n, mean JCT s | the rest: n, mean JCT s | re-queued jobs |")
print("| --- | ---: | ---: | --- | --- | ---: |")
for path in sorted(run_dir.glob("records-*.csv")):
    rows = list(csv.DictReader(open(path)))
    capped = [float(r["jct"]) for r in rows if r.get("finish_reason") == "length"]
    rest = [float(r["jct"]) for r in rows if r.get("finish_reason") != "length"]
    requeued = sum(float(r["queuing_delay"]) > float(r["first_start"]) - float(r["arrival"]) + 1e-3 for r in rows)
    name = path.stem.removeprefix("records-")
    print(f"| {name} | {len(rows)} | {statistics.mean(float(r['jct']) for r in rows):.2f} | "
          f"{len(capped)}, {statistics.mean(capped) if capped else float('nan'):.2f} | "
          f"{len(rest)}, {statistics.mean(rest):.2f} | {requeued} |")
