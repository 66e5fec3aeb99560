"""The outcome guard in the simulator: each policy under the service's scheduler with the outcome guard off and on,
against FCFS, on one corpus source's lengths capped at 512 tokens, Gamma arrivals, one worker x 4 slots.

The quality guard is off (the predictor is given: a persistent lognormal error of SIGMA), so only the outcome guard
can take a policy back to FCFS. MLFQ (no predictions: the quality guard never judges it) on lengths that mostly
run to the cap is the case the issue names: least-attained-service order over long jobs. Each cell: mean JCT as
a ratio to FCFS (mean over seeds), and in brackets how many runs tripped the guard at least once and, over those
runs, the median number of jobs that had arrived when it first tripped (how long the loss went unnoticed).

Usage: python scripts/sim_outcome_guard.py [LOAD,...] [SIGMA|recorded:PATH] [JOBS] [SEEDS] [SOURCE] [POLICY,...]
    [SETTING=VALUE,...]
(defaults 0.7,0.9,1.1  1.0  400  5  seed_tasks  mlfq,isrtf,sjf, no extra settings). docs/scheduling.md has the
results.
"""
import statistics
import sys

from elis.replay.workload import synthetic_workload
from elis.scheduling.policy import make_policy
from elis.simulator import figures
from elis.simulator.blind import CORPUS_PATH, corpus_pool
from elis.simulator.core import SimConfig, Simulator
from elis.simulator.engine_profile import EngineProfile

loads = [float(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "0.7,0.9,1.1").split(",")]
predictor = sys.argv[2] if len(sys.argv) > 2 else "1.0"
num_jobs = int(sys.argv[3]) if len(sys.argv) > 3 else 400
num_seeds = int(sys.argv[4]) if len(sys.argv) > 4 else 5
source = sys.argv[5] if len(sys.argv) > 5 else "seed_tasks"
policies = (sys.argv[6] if len(sys.argv) > 6 else "mlfq,isrtf,sjf").split(",")

profile = EngineProfile.load(None)
config = SimConfig(1, 4, 50, max_tokens=512)
pool = corpus_pool(CORPUS_PATH, source, 512)
capacity = figures.measure_capacity(profile, config, pool)
# SIGMA: a persistent lognormal error, or recorded:PATH: the predictor's recorded errors per step (e.g. on a
# source it never saw: elis/data/predictor/eval/ood_errors.csv), biased low at admission as issue 8 measured.
if predictor.startswith("recorded:"):
    spec = figures.PredictorSpec("recorded", errors=predictor.split(":", 1)[1])
else:
    spec = figures.PredictorSpec("persistent", float(predictor))
# ELIS_* settings the runs share besides the outcome guard, e.g. "calibrate_steps=false,yield_margin=false"
# (the papers' ISRTF: no per-step calibration, no margin).
shared = dict(item.split("=") for item in sys.argv[7].split(",")) if len(sys.argv) > 7 else {}


def run(policy: str, seed: int, jobs, **overrides):
    """The run's summary, its trips, and the number of jobs that had arrived when the guard first tripped."""
    scheduler = figures.service_scheduler(policy, guard=False, **shared, **overrides)
    first_trip: list[float] = []
    observe = scheduler.observe

    def watched(*args, **kwargs):  # note the clock at the first trip: how long the loss went unnoticed
        changed = observe(*args, **kwargs)
        if scheduler.outcome.trips and not first_trip:
            first_trip.append(kwargs["now"])
        return changed

    scheduler.observe = watched
    result = Simulator(jobs, make_policy(policy), profile, config, spec.build(seed), scheduler=scheduler).run()
    arrived = sum(job.arrival <= first_trip[0] for job in jobs) if first_trip else None
    return result.summary, scheduler.outcome.trips, arrived


print(f"{source} lengths (cap 512), predictor {spec.kind} {spec.errors or spec.sigma}, settings {shared}, "
      f"capacity {capacity:.3f} jobs/s, {num_jobs} jobs x {num_seeds} seeds; "
      "mean JCT / FCFS (runs that tripped, median job at the first trip); p99 / FCFS")
header = [f"{p}, outcome guard {state}" for p in policies for state in ("off", "on")]
print("| load | " + " | ".join(header) + " |")
print("| ---: |" + " ---: |" * len(header))
for load in loads:
    means: dict[str, list[float]] = {h: [] for h in header}
    tails: dict[str, list[float]] = {h: [] for h in header}
    tripped: dict[str, int] = {h: 0 for h in header}
    first_trips: dict[str, list[int]] = {h: [] for h in header}
    for seed in range(num_seeds):
        jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=seed, pool=pool)
        fcfs, _, _ = run("fcfs", seed, jobs)
        for policy in policies:
            for state in ("off", "on"):
                label = f"{policy}, outcome guard {state}"
                summary, trips, arrived = run(policy, seed, jobs, outcome_guard=state == "on")
                means[label].append(summary.mean_jct / fcfs.mean_jct)
                tails[label].append(summary.p99_jct / fcfs.p99_jct)
                tripped[label] += trips > 0
                if arrived is not None:
                    first_trips[label].append(arrived)

    def first_trip(label: str) -> str:
        arrived = first_trips[label]
        return f", first trip at job {statistics.median(arrived):.0f}" if arrived else ""

    cells = [f"{statistics.mean(means[h]):.3f} ({tripped[h]}{first_trip(h)}); p99 {statistics.mean(tails[h]):.2f}"
             for h in header]
    print(f"| {load} | " + " | ".join(cells) + " |")
