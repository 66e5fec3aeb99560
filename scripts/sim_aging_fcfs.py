"""Should the aging bound grow with the queue? ISRTF's and SJF's mean and p99 JCT against FCFS under the
service's scheduler (quality guard off: the predictor is given), in the simulator, with the aging bound derived
from service times alone (`aging_fcfs_factor` 0, the default before 2026-12-06) and with it never below K x the
mean JCT FCFS would have given the recent jobs (the outcome guard's counterfactual, refreshed as live), for
several K; aging off for reference. The exact-length bound (SRTF on true lengths) runs under the service's
default aging, as live.

Usage: python scripts/sim_aging_fcfs.py [LOADS] [JOBS] [SEEDS] [SOURCE] [KS] [SIGMA]
(defaults: LOADS 0.8,1.0,1.8 in units of the measured capacity; 100 jobs; 10 seeds; seed_tasks lengths, cap 512;
KS 1,1.25,1.5; a persistent lognormal predictor error of SIGMA 1.0). docs/scheduling.md has the results."""
import statistics
import sys

from elis.replay.workload import synthetic_workload
from elis.scheduling.policy import make_policy
from elis.simulator import figures
from elis.simulator.blind import CORPUS_PATH, corpus_pool
from elis.simulator.core import SimConfig, simulate
from elis.simulator.engine_profile import EngineProfile


def arg(i: int, default: str) -> str:
    return sys.argv[i] if len(sys.argv) > i else default


loads = [float(x) for x in arg(1, "0.8,1.0,1.8").split(",")]
num_jobs, num_seeds, source = int(arg(2, "100")), int(arg(3, "10")), arg(4, "seed_tasks")
ks = [float(x) for x in arg(5, "1,1.25,1.5").split(",")]
spec = figures.PredictorSpec("persistent", float(arg(6, "1.0")))
profile = EngineProfile.load(None)
config = SimConfig(1, 4, 50, max_tokens=512)
pool = corpus_pool(CORPUS_PATH, source, 512)
capacity = figures.measure_capacity(profile, config, pool)
arms: list[tuple[str, str, dict]] = [("srtf-oracle", "bound (service aging)", {})]
for policy in ("isrtf", "sjf"):
    arms.append((policy, "service times only (3x)", {"aging_fcfs_factor": 0.0}))
    arms += [(policy, f"3x service, >= {k:g}x FCFS mean", {"aging_fcfs_factor": k}) for k in ks]
    arms.append((policy, "off", {"aging": False}))
print(f"{source} lengths (cap 512), capacity {capacity:.3f} jobs/s, {num_jobs} jobs x {num_seeds} seeds, "
      f"persistent sigma {spec.sigma}")
print("| load | policy | aging bound | mean JCT / FCFS | p99 JCT / FCFS |")
print("| ---: | --- | --- | ---: | ---: |")
for load in loads:
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for seed in range(num_seeds):
        jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=seed, pool=pool)
        base = simulate(jobs, make_policy("fcfs"), profile, config, spec.build(seed)).summary
        for policy, label, overrides in arms:
            sched = figures.service_scheduler(policy, guard=False, **overrides)
            s = simulate(jobs, make_policy(policy), profile, config, spec.build(seed), scheduler=sched).summary
            rows.setdefault((policy, label), []).append((s.mean_jct / base.mean_jct, s.p99_jct / base.p99_jct))
    for (policy, label), v in rows.items():
        print(f"| {load:g} | {policy} | {label} | {statistics.mean(a for a, _ in v):.3f} | "
              f"{statistics.mean(b for _, b in v):.3f} |")
