"""What re-predicting every window costs when the predictor shares the engine's cores, and what re-predicting only
where a prediction could make the job yield (the default, `Scheduler.should_repredict`) saves, in the simulator.

FCFS, SSJF and ISRTF under the service's scheduler (quality guard off: the predictor is given; default margin,
calibration and aging) on one source's lengths in the corpus, capped at 512 tokens as max_tokens, Gamma arrivals,
one worker x 4 slots. ISRTF runs twice: re-predicting every window (the papers) and only where it matters. Each
re-prediction stalls the engine for PREDICT_S seconds (0.018 s was measured live per re-prediction in run 15).

Usage: python scripts/sim_repredict_cost.py [PREDICT_S,...] [LOAD,...] [SIGMA] [JOBS] [SEEDS] [SOURCE]
(defaults 0,0.018,0.05  0.7,0.9,1.1  1.0  100  10  seed_tasks). docs/scheduling.md has the results.
"""
import statistics
import sys
from dataclasses import replace

from elis.replay.workload import synthetic_workload
from elis.scheduling.policy import make_policy
from elis.simulator import figures
from elis.simulator.blind import CORPUS_PATH, corpus_pool
from elis.simulator.core import SimConfig, simulate
from elis.simulator.engine_profile import EngineProfile


def _floats(index: int, default: str) -> list[float]:
    return [float(x) for x in (sys.argv[index] if len(sys.argv) > index else default).split(",")]


predict_costs = _floats(1, "0,0.018,0.05")
loads = _floats(2, "0.7,0.9,1.1")
sigma = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
num_jobs = int(sys.argv[4]) if len(sys.argv) > 4 else 100
num_seeds = int(sys.argv[5]) if len(sys.argv) > 5 else 10
source = sys.argv[6] if len(sys.argv) > 6 else "seed_tasks"

base_profile = EngineProfile.load(None)
config = SimConfig(1, 4, 50, max_tokens=512)
pool = corpus_pool(CORPUS_PATH, source, 512)
capacity = figures.measure_capacity(base_profile, config, pool)
spec = figures.PredictorSpec("persistent", sigma)
runs = {"sjf": ("sjf", {}), "isrtf, every window": ("isrtf", {"repredict_every_window": True}),
        "isrtf, where it matters": ("isrtf", {})}
print(f"{source} lengths (cap 512), persistent sigma {sigma}, capacity {capacity:.3f} jobs/s (no predictor cost), "
      f"{num_jobs} jobs x {num_seeds} seeds; mean JCT as a ratio to FCFS (mean over seeds), re-predictions per window")
print("| predict_s | load | " + " | ".join(runs) + " |")
print("| ---: | ---: |" + " ---: |" * len(runs))
for predict_s in predict_costs:
    profile = replace(base_profile, predict_s=predict_s)
    for load in loads:
        ratios: dict[str, list[float]] = {label: [] for label in runs}
        per_window: dict[str, list[float]] = {label: [] for label in runs}
        for seed in range(num_seeds):
            jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=seed, pool=pool)
            fcfs = simulate(jobs, make_policy("fcfs"), profile, config, spec.build(seed),
                            scheduler=figures.service_scheduler("fcfs", guard=False)).summary
            for label, (policy, overrides) in runs.items():
                scheduler = figures.service_scheduler(policy, guard=False, **overrides)
                result = simulate(jobs, make_policy(policy), profile, config, spec.build(seed), scheduler=scheduler)
                ratios[label].append(result.summary.mean_jct / fcfs.mean_jct)
                per_window[label].append(result.num_predictions / max(result.num_windows, 1))
        cells = [f"{statistics.mean(ratios[label]):.3f} ({statistics.mean(per_window[label]):.2f})" for label in runs]
        print(f"| {predict_s} | {load} | " + " | ".join(cells) + " |")
