"""The outcome guard's counterfactual on each run of a live comparison, read from its database with the exact
window spans the service uses (`storage.jobs.recent_cohort`), every job judged, FCFS runs included: on an FCFS
run the ratio is the counterfactual's own error; on a policy's run, what the guard measures.

Usage: python scripts/outcome_guard_db.py DATABASE_URL [LABEL_SUBSTRING]
(each replay's jobs carry its label, e.g. compare-1203081103-fcfs; warm-up runs are left out).
"""
import sys
from dataclasses import replace

from sqlalchemy import select

from elis import clock
from elis.scheduling.outcome import measure_outcome
from elis.storage import jobs as store
from elis.storage.db import session_scope
from elis.storage.models import Job

url = sys.argv[1]
needle = sys.argv[2] if len(sys.argv) > 2 else ""
print("| run | jobs | slots | mean JCT s | FCFS counterfactual s | ratio |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
with session_scope(url) as session:
    labels = sorted(label for label in session.scalars(select(Job.workload).distinct())
                    if label and needle in label and not label.endswith("warmup"))
    for label in labels:
        now = clock.now()
        cohort = store.recent_cohort(session, limit=100_000, arrived_before=now, now=now, workload=label)
        check = measure_outcome([replace(job, judged=True) for job in cohort.jobs], cohort.slots,
                                cohort.backlog)
        if check is not None:
            print(f"| {label} | {check.num_judged} | {check.slots} | {check.realized_mean_s:.2f} | "
                  f"{check.fcfs_mean_s:.2f} | {check.ratio:.3f} |")
