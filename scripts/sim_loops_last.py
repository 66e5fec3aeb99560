"""Loops last in the quality guard's fallback: what moving greedy loops behind the queue gains, in the simulator.

On a source the predictor cannot rank (left-out gsm8k under greedy decoding: admission tau 0.004 live, run 30
of docs/scheduling.md), the quality guard holds ISRTF at FCFS order. One length is still certain there: a
greedy output caught in a loop runs to max_tokens (`elis.predictor.loops`, precision 1.0 on every greedy set
measured). `scheduling.LoopsLast` lets such a job give its slot to a waiting job and wait behind the others when
more than the mean finished length is left.

The workload: the 150 greedy gsm8k generations of the served model (elis/data/predictor_greedy_gsm8k.jsonl.gz),
each with the window at which the loop detector first flags it, capped at max_tokens; Gamma arrivals (CV 1.17)
at several loads (arrival rate / the FCFS capacity); one worker x 4 slots; the service's scheduler as its
settings build it (aging, margin, outcome guard), the quality guard pinned in fallback for ISRTF. Mean, p50 and
p99 JCT as ratios to FCFS on the same arrivals; the exact-length bound (SRTF-oracle) beside them.

Usage: python scripts/sim_loops_last.py [JOBS] [SEEDS] [LOADS] [MAX_TOKENS] [GREEDY_RECORDS]
(defaults: 300, 5, "0.6,0.8,1.0,1.2", 512, the gsm8k set; elis/data/predictor_greedy.jsonl.gz holds 1,000 greedy
outputs of four sources, some of whose flagged outputs end before the cap: the script prints how many).
docs/scheduling.md has the results.
"""
import gzip
import json
import statistics
import sys
from pathlib import Path

from tqdm import tqdm

from elis.predictor.loops import first_flag_step
from elis.replay.workload import TraceJob, synthetic_workload
from elis.scheduling.policy import make_policy
from elis.simulator import figures
from elis.simulator.core import SimConfig, simulate
from elis.simulator.engine_profile import EngineProfile

GREEDY = Path(__file__).resolve().parent.parent / "elis" / "data" / "predictor_greedy_gsm8k.jsonl.gz"

num_jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 300
num_seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
loads = [float(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "0.6,0.8,1.0,1.2").split(",")]
max_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 512
records_path = Path(sys.argv[5]) if len(sys.argv) > 5 else GREEDY


def loop_pool(path: Path, cap: int) -> tuple[list[TraceJob], int]:
    """Each record as a job capped at `cap`, with the tokens at which its loop is first flagged (a window
    boundary below the cap); also how many flagged outputs ended before the cap (the detector's misses)."""
    pool, misses = [], 0
    with gzip.open(path, "rt") as handle:
        for line in handle:
            record = json.loads(line)
            output = min(len(record["output_ids"]), cap)
            window = record["window_tokens"]
            # boundaries inside the capped output: step * window < min(length, cap)
            first = first_flag_step(record, max_step=(cap - 1) // window)
            loop_at = first * window if first is not None else None
            misses += loop_at is not None and output < cap
            pool.append(TraceJob(record["id"], 0.0, len(record["prompt_ids"]), max(1, output), loop_at))
    return pool, misses


pool, misses = loop_pool(records_path, max_tokens)
capped = sum(job.num_output_tokens >= max_tokens for job in pool)
flagged = [job.loop_at for job in pool if job.loop_at is not None]
mean_output = statistics.mean(job.num_output_tokens for job in pool)
print(f"{len(pool)} greedy outputs ({records_path.name}) at max_tokens {max_tokens}: mean {mean_output:.0f} tokens, "
      f"{capped} capped, "
      f"{len(flagged)} flagged (first flag at {sorted(flagged)} tokens), {misses} flagged but ended before the cap; "
      f"{num_jobs} jobs x {num_seeds} seeds, one worker x 4 slots")

profile = EngineProfile.load(None)
config = SimConfig(1, 4, 50, max_tokens=max_tokens)
capacity = figures.measure_capacity(profile, config, pool)
ARMS = {
    "isrtf in fallback (FCFS order)": ("isrtf", {"guard_threshold": 1.5, "fallback_loops_last": False}),
    "isrtf in fallback, loops last": ("isrtf", {"guard_threshold": 1.5, "fallback_loops_last": True}),
    "exact-length bound": ("srtf-oracle", {}),
}

print("| load | arm | mean JCT / FCFS | p50 / FCFS | p99 / FCFS | mean JCT of looping jobs / FCFS | jobs re-queued |")
print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
for load in tqdm(loads, desc="loads", leave=False):
    rows: dict[str, list[tuple[float, float, float, float, int]]] = {arm: [] for arm in ARMS}
    for seed in range(num_seeds):
        jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=seed, pool=pool)
        looping = {job.job_id for job in jobs if job.loop_at is not None}
        fcfs = simulate(jobs, make_policy("fcfs"), profile, config, scheduler=figures.service_scheduler("fcfs"))
        base = fcfs.summary
        base_loops = statistics.mean(r.jct for r in fcfs.records if r.job_id in looping) if looping else 1.0
        for arm, (policy, overrides) in ARMS.items():
            result = simulate(jobs, make_policy(policy), profile, config,
                              scheduler=figures.service_scheduler(policy, **overrides))
            s = result.summary
            loops = statistics.mean(r.jct for r in result.records if r.job_id in looping) if looping else 1.0
            requeued = sum(1 for r in result.records if r.queuing_delay > (r.first_start - r.arrival) + 1e-6)
            rows[arm].append((s.mean_jct / base.mean_jct, s.p50_jct / base.p50_jct, s.p99_jct / base.p99_jct,
                              loops / base_loops, requeued))
    for arm, values in rows.items():
        n = len(values)
        cells = " | ".join(f"{sum(v[i] for v in values) / n:.3f}" for i in range(4))
        print(f"| {load} | {arm} | {cells} | {sum(v[4] for v in values) / n:.1f} |", flush=True)
