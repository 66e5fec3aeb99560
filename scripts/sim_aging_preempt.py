"""Should a starving job take a running job's slot? Under ISRTF, MLFQ and the exact-length bound (SRTF), the
service's scheduler with aging pre-empting (`ELIS_AGING_PREEMPTS=true`, the old default) against aging that only
reorders the queue (as under FCFS and SJF), in the simulator: mean, p99 and max JCT against FCFS, and the jobs
re-queued after they started. One worker x 4 slots, Gamma arrivals (CV 1.17), the corpus lengths of each source
(cap 512), a persistent lognormal predictor error, the quality guard off (the predictor is given), the outcome
guard on as in the service.

Usage: python scripts/sim_aging_preempt.py [SIGMA] [JOBS] [SEEDS] [LOADS] [SOURCES]
(defaults: 1.0, 400, 3, "0.7,0.9,1.1", "seed_tasks,alpaca"). docs/scheduling.md has the results.
"""
import sys

from tqdm import tqdm

from elis.replay.workload import synthetic_workload
from elis.scheduling.policy import make_policy
from elis.simulator import figures
from elis.simulator.blind import CORPUS_PATH, corpus_pool
from elis.simulator.core import SimConfig, simulate
from elis.simulator.engine_profile import EngineProfile

sigma = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
num_jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 400
num_seeds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
loads = [float(x) for x in (sys.argv[4] if len(sys.argv) > 4 else "0.7,0.9,1.1").split(",")]
sources = (sys.argv[5] if len(sys.argv) > 5 else "seed_tasks,alpaca").split(",")
POLICIES = ("isrtf", "mlfq", "srtf-oracle")

profile = EngineProfile.load(None)
config = SimConfig(1, 4, 50)
spec = figures.PredictorSpec("persistent", sigma)


def requeued(records) -> int:
    """Jobs that waited again after they first started (pre-empted at least once)."""
    return sum(1 for r in records if r.queuing_delay > (r.first_start - r.arrival) + 1e-6)


print(f"persistent sigma {sigma}, {num_jobs} jobs x {num_seeds} seeds, one worker x 4 slots")
print("| source | load | policy | aging pre-empts | mean JCT / FCFS | p99 / FCFS | max / FCFS | jobs re-queued |")
print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |")
cases = [(s, load) for s in sources for load in loads]
for source, load in tqdm(cases, desc="cases", leave=False):
    pool = corpus_pool(CORPUS_PATH, source, 512)
    capacity = figures.measure_capacity(profile, config, pool)
    rows: dict[tuple[str, bool], list[tuple[float, float, float, int]]] = {}
    for seed in range(num_seeds):
        jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=seed, pool=pool)
        fcfs = simulate(jobs, make_policy("fcfs"), profile, config, spec.build(seed),
                        scheduler=figures.service_scheduler("fcfs", guard=False))
        base, base_max = fcfs.summary, max(r.jct for r in fcfs.records)
        for policy in POLICIES:
            for preempts in (True, False):
                sched = figures.service_scheduler(policy, guard=False, aging_preempts=preempts)
                result = simulate(jobs, make_policy(policy), profile, config, spec.build(seed), scheduler=sched)
                s = result.summary
                rows.setdefault((policy, preempts), []).append(
                    (s.mean_jct / base.mean_jct, s.p99_jct / base.p99_jct,
                     max(r.jct for r in result.records) / base_max, requeued(result.records)))
    for (policy, preempts), values in rows.items():
        n = len(values)
        print(f"| {source} | {load} | {policy} | {'yes' if preempts else 'no'} | "
              f"{sum(v[0] for v in values) / n:.3f} | {sum(v[1] for v in values) / n:.3f} | "
              f"{sum(v[2] for v in values) / n:.3f} | {sum(v[3] for v in values) / n:.1f} |", flush=True)
