"""The short jobs in the replay of run 52's ISRTF run: mean JCT of all jobs and of the jobs under 32 tokens, under
FCFS, ISRTF with aging_service_factor 0 and 1, and the exact-length bound, on the simulator with the service's
scheduler (derived aging bound, guard off), as `elis simulate replay` runs it.
    .venv/bin/python docs/evidence/diag-r52/replay_short_jobs.py [RECORDS_CSV] [SCALES]"""

import statistics
import sys
from dataclasses import replace

from elis.scheduling.policy import make_policy
from elis.simulator.core import SimConfig, simulate
from elis.simulator.engine_profile import EngineProfile
from elis.simulator.figures import profile_weight, service_scheduler
from elis.simulator.replayed import read_live_run

records = sys.argv[1] if len(sys.argv) > 1 else "docs/evidence/diag-r52/runs/isrtf/records-isrtf.csv"
scales = [float(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "1,1.3,1.6").split(",")]
run = read_live_run([records])
profile = EngineProfile.load()
weight = profile_weight(profile, 4)
arms = [("fcfs", "fcfs", {}), ("isrtf", "isrtf", {}), ("isrtf, waits alone", "isrtf", {"aging_service_factor": 1.0}),
        ("bound", "srtf-oracle", {})]
print("| rate | run | mean JCT s | p99 JCT s | jobs under 32 tokens: mean JCT s | jobs at the cap: mean JCT s |")
print("| --- | --- | ---: | ---: | ---: | ---: |")
for scale in scales:
    jobs = [replace(job, arrival=job.arrival / scale) for job in run.jobs]
    for label, policy, overrides in arms:
        scheduler = service_scheduler(policy, prefill_weight=weight, guard=False, **overrides)
        result = simulate(jobs, make_policy(policy), profile, SimConfig(1, 4, 50, max_tokens=run.max_tokens),
                          run.predictions, scheduler=scheduler)
        jcts = sorted(r.jct for r in result.records)
        short = [r.jct for r in result.records if r.num_output_tokens < 32]
        capped = [r.jct for r in result.records if r.num_output_tokens >= run.max_tokens]
        print(f"| x{scale:g} | {label} | {statistics.mean(jcts):.2f} | {jcts[int(0.99 * (len(jcts) - 1))]:.1f} | "
              f"{statistics.mean(short):.2f} ({len(short)}) | {statistics.mean(capped):.2f} ({len(capped)}) |")
