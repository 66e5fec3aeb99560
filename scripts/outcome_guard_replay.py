"""What the outcome guard would have said about every recorded live run: each run's mean JCT against the FCFS
counterfactual of the same jobs (elis.scheduling.outcome), next to the run's mean JCT against the FCFS runs
of the same comparison (which ran minutes apart, on an engine whose speed drifts by up to a third).

A records CSV holds each job's arrival, finish, window count and compute seconds per window, not the window
timestamps the service reads; so each job's slot time here is its compute plus, per window, the median
time outside the engine of the FCFS jobs of the same comparison (0.02 s where there are none), and it
ends at the job's finish. The runs started from an empty system: no backlog. On the FCFS runs themselves
the counterfactual should give 1.0: how far it is from it is its error.

Usage: python scripts/outcome_guard_replay.py [EVIDENCE_DIR] [TOLERANCE] [MIN_JOBS]
(defaults docs/evidence 0.05 50). docs/scheduling.md has the table.
"""
import csv
import json
import statistics
import sys
from pathlib import Path

from elis.scheduling.outcome import JobOutcome, measure_outcome

root = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/evidence")
tolerance = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
min_jobs = int(sys.argv[3]) if len(sys.argv) > 3 else 50
DEFAULT_GAP_S = 0.02


def done_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["status"] == "done" and r.get("window_compute_s")]


def compute_s(row: dict) -> float:
    return sum(float(x) for x in row["window_compute_s"].split())


def fcfs_gap(rows: list[dict]) -> float:
    """Median seconds per window a FCFS job held its slot outside the engine (it never waited in between)."""
    gaps = [(float(r["finish"]) - float(r["first_start"]) - compute_s(r)) / int(r["num_windows"]) for r in rows]
    return statistics.median(gaps) if gaps else DEFAULT_GAP_S


def slots_of(folder: Path) -> int:
    manifest = folder / "manifest.json"
    if manifest.exists():
        settings = json.loads(manifest.read_text()).get("settings", {})
        if settings.get("slots"):
            return int(settings["slots"]) * int(settings.get("workers", 1) or 1)
    return 4


print(f"| run | policy | jobs | mean JCT s | FCFS counterfactual s | ratio | trips at {1 + tolerance:.2f}? | "
      "vs the FCFS runs' mean |")
print("| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |")
for folder in sorted({p.parent for p in root.glob("**/records-*.csv")}):
    files = sorted(folder.glob("records-*.csv"))
    fcfs_rows = [r for f in files if f.name.startswith("records-fcfs") for r in done_rows(f)]
    gap = fcfs_gap(fcfs_rows) if fcfs_rows else DEFAULT_GAP_S
    fcfs_files = [done_rows(f) for f in files if f.name.startswith("records-fcfs")]
    # From the store, as the counterfactual's JCTs are (a records CSV's jct counts the admission wait too).
    fcfs_mean = statistics.mean(statistics.mean(float(r["finish"]) - float(r["arrival"]) for r in rows)
                                for rows in fcfs_files if rows) \
        if any(fcfs_files) else None
    for path in files:
        rows = done_rows(path)
        if not rows:
            continue
        outcomes = []
        for r in rows:
            slot = compute_s(r) + gap * int(r["num_windows"])
            finish = float(r["finish"])
            outcomes.append(JobOutcome(float(r["arrival"]), finish, ((finish - slot, finish),)))
        check = measure_outcome(outcomes, slots_of(folder))
        trips = check.num_judged >= min_jobs and check.ratio > 1 + tolerance
        versus = "" if fcfs_mean is None else f"{check.realized_mean_s / fcfs_mean:.2f}x"
        policy = path.stem.removeprefix("records-")
        print(f"| {folder.relative_to(root)} | {policy} | {check.num_judged} | {check.realized_mean_s:.2f} | "
              f"{check.fcfs_mean_s:.2f} | {check.ratio:.3f} | {'yes' if trips else 'no'} | {versus} |")
