"""Does the yield margin hold ISRTF back under today's aging? ISRTF's mean and p99 JCT against FCFS under the
service's scheduler (quality guard off: the predictor is given) for yield uncertainties 0, 0.3, 0.6 and 0.9 (the
default), in the simulator, with the aging bound that grows with the queue.

Usage: python scripts/sim_margin_aging.py [LOADS] [JOBS] [SOURCE] [SIGMA] (defaults: 1.0,1.5; 100 jobs x 6 seeds;
seed_tasks lengths, max_tokens 512; a persistent lognormal predictor error of sigma 1.0). docs/scheduling.md,
run 35, has the result."""
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


loads = [float(x) for x in arg(1, "1.0,1.5").split(",")]
num_jobs, source = int(arg(2, "100")), arg(3, "seed_tasks")
spec = figures.PredictorSpec("persistent", float(arg(4, "1.0")))
profile = EngineProfile.load(None)
config = SimConfig(1, 4, 50, max_tokens=512)
pool = corpus_pool(CORPUS_PATH, source, 512)
capacity = figures.measure_capacity(profile, config, pool)
print("| load | yield uncertainty | ISRTF mean JCT / FCFS | p99 JCT / FCFS |")
print("| ---: | ---: | ---: | ---: |")
for load in loads:
    rows: dict[float, list[tuple[float, float]]] = {}
    for seed in range(6):
        jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=seed, pool=pool)
        base = simulate(jobs, make_policy("fcfs"), profile, config, spec.build(seed)).summary
        for u in (0.0, 0.3, 0.6, 0.9):
            sched = figures.service_scheduler("isrtf", guard=False, yield_uncertainty=u)
            s = simulate(jobs, make_policy("isrtf"), profile, config, spec.build(seed), scheduler=sched).summary
            rows.setdefault(u, []).append((s.mean_jct / base.mean_jct, s.p99_jct / base.p99_jct))
    for u, v in rows.items():
        print(f"| {load:g} | {u:g} | {statistics.mean(a for a, _ in v):.3f} | {statistics.mean(b for _, b in v):.3f} |")
