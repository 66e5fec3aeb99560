"""Does aging bound the tail? ISRTF's and SSJF's mean and p99 JCT against FCFS under the service's scheduler
(quality guard off: the predictor is given), for several aging factors, on one source's lengths in the corpus (cap
512), Gamma arrivals, in the simulator. Usage: python scripts/sim_aging_tail.py [SIGMA] [LOAD] [JOBS] [SEEDS]
[SOURCE] [FACTORS] (a persistent lognormal predictor error of SIGMA, default 1.0; LOAD default 0.85; 400 jobs x 3
seeds; SOURCE default alpaca: alpaca, seed_tasks, code_alpaca or gsm8k; FACTORS the comma-separated aging factors,
default 1,2,3,5). The bound
is SRTF with exact lengths, under the service's aging as live ("bound") and without aging ("bound, no aging").
docs/scheduling.md has the results."""
import sys

from elis.replay.workload import synthetic_workload
from elis.scheduling.policy import make_policy
from elis.simulator import figures
from elis.simulator.blind import CORPUS_PATH, corpus_pool
from elis.simulator.core import SimConfig, simulate
from elis.simulator.engine_profile import EngineProfile

profile = EngineProfile.load(None)
config = SimConfig(1, 4, 50)
source = sys.argv[5] if len(sys.argv) > 5 else "alpaca"
pool = corpus_pool(CORPUS_PATH, source, 512)
capacity = figures.measure_capacity(profile, config, pool)
spec = figures.PredictorSpec("persistent", float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
load = float(sys.argv[2]) if len(sys.argv) > 2 else 0.85
num_jobs = int(sys.argv[3]) if len(sys.argv) > 3 else 400
num_seeds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
factors = [float(f) for f in sys.argv[6].split(",")] if len(sys.argv) > 6 else [1.0, 2.0, 3.0, 5.0]
print(f"{source} lengths, load {load}, persistent sigma {spec.sigma}, capacity {capacity:.3f} jobs/s, "
      f"{num_jobs} jobs x {num_seeds} seeds")
rows = {}
for seed in range(num_seeds):
    jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=seed, pool=pool)
    base = simulate(jobs, make_policy("fcfs"), profile, config, spec.build(seed)).summary
    for label, sched in (("bound", figures.service_scheduler("srtf-oracle", guard=False)), ("bound, no aging", None)):
        bound = simulate(jobs, make_policy("srtf-oracle"), profile, config, spec.build(seed), scheduler=sched).summary
        rows.setdefault((label, "-" if sched is None else 3.0), []).append(
            (bound.mean_jct / base.mean_jct, bound.p99_jct / base.p99_jct))
    for policy in ("isrtf", "sjf"):
        for factor in (*factors, None):
            overrides = {"aging": False} if factor is None else {"aging_factor": factor, "aging_floor_s": 1.0}
            sched = figures.service_scheduler(policy, guard=False, **overrides)
            s = simulate(jobs, make_policy(policy), profile, config, spec.build(seed), scheduler=sched).summary
            rows.setdefault((policy, "off" if factor is None else factor), []).append(
                (s.mean_jct / base.mean_jct, s.p99_jct / base.p99_jct))
print("| policy | aging factor | mean JCT / FCFS | p99 JCT / FCFS |")
print("| --- | --- | ---: | ---: |")
for (policy, factor), v in rows.items():
    print(f"| {policy} | {factor} | {sum(a for a, _ in v) / len(v):.3f} | {sum(b for _, b in v) / len(v):.3f} |")
