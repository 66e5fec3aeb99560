"""Does counting a prompt's prefill as work pay? Exact-length SJF and SRTF against FCFS, ordered by output tokens
alone (prefill_weight 0, as the papers order) and by output plus the prefill still to pay (the service's default
weight, from the bundled engine profile), on the Azure 2023 conversation lengths, 1 worker x 4 slots, Gamma
arrivals (CV 1.17), under the service's scheduler (guard, aging, margin) as `elis simulate guard` runs it. Then
the papers' order (output alone, no margin, no aging) on this engine profile and on the same profile with the
prefill free: why SRTF lost to SJF here before the prefill counted.

Usage: python scripts/sim_prefill_work.py [LOADS] [JOBS] [MAX_PROMPT_TOKENS]
  LOADS              default 0.5,0.7,0.8,0.9
  JOBS               default 2000
  MAX_PROMPT_TOKENS  cap the trace's prompts (e.g. 512, as `elis compare` caps its filler prompts); default none
"""
import dataclasses
import sys

from elis.replay.workload import read_azure_trace, synthetic_workload
from elis.scheduling.policy import make_policy
from elis.scheduling.work import bundled_prefill_weight
from elis.simulator.core import SimConfig, simulate
from elis.simulator.engine_profile import EngineProfile
from elis.simulator.figures import measure_capacity, service_scheduler

loads = [float(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "0.5,0.7,0.8,0.9").split(",")]
num_jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
cap_prompt = int(sys.argv[3]) if len(sys.argv) > 3 else None
profile = EngineProfile.load(None)
config = SimConfig(1, 4, 50)
pool = read_azure_trace(None)
if cap_prompt:
    pool = [dataclasses.replace(j, num_prompt_tokens=min(j.num_prompt_tokens, cap_prompt)) for j in pool]
capacity = measure_capacity(profile, config, pool)
weight = bundled_prefill_weight(config.num_slots)
mean_prompt = sum(j.num_prompt_tokens for j in pool) / len(pool)
mean_output = sum(j.num_output_tokens for j in pool) / len(pool)
print(f"prefill weight {weight:.3f} decode steps per prompt token; mean prompt {mean_prompt:.0f} tokens "
      f"(= {weight * mean_prompt:.0f} steps), mean output {mean_output:.0f} tokens; {num_jobs} jobs\n")
arms = [(policy, w) for policy in ("sjf", "srtf-oracle") for w in (0.0, weight)]
print("| load | FCFS mean JCT s | " + " | ".join(f"{p} weight {w:.2f} / FCFS" for p, w in arms) + " |")
print("| ---: | ---: | " + " | ".join("---:" for _ in arms) + " |")
for load in loads:
    jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=0, pool=pool)
    fcfs = simulate(jobs, make_policy("fcfs"), profile, config, scheduler=service_scheduler("fcfs")).summary.mean_jct
    cells = []
    for policy, w in arms:
        # Exact lengths: the quality guard has nothing to doubt (start trusted), as with a perfect predictor.
        scheduler = service_scheduler(policy, prefill_weight=w, guard_start_in_fallback=False)
        mean = simulate(jobs, make_policy(policy), profile, config, scheduler=scheduler).summary.mean_jct
        cells.append(f"{mean / fcfs:.3f}")
    print(f"| {load:g} | {fcfs:.1f} | " + " | ".join(cells) + " |", flush=True)

print("\nThe papers' order (no margin, no aging, output tokens alone), mean JCT / FCFS's:\n")
print("| load | SJF | SRTF-oracle | prefill free: SJF | prefill free: SRTF-oracle |")
print("| ---: | ---: | ---: | ---: | ---: |")
free = dataclasses.replace(profile, prefill_s_per_token=0.0)
free_capacity = measure_capacity(free, config, pool)
for load in loads:
    cells = []
    for engine, cap in ((profile, capacity), (free, free_capacity)):
        jobs = synthetic_workload(num_jobs, "gamma", load * cap, None, seed=0, pool=pool)
        fcfs = simulate(jobs, make_policy("fcfs"), engine, config).summary.mean_jct
        cells += [f"{simulate(jobs, make_policy(p), engine, config).summary.mean_jct / fcfs:.3f}"
                  for p in ("sjf", "srtf-oracle")]
    print(f"| {load:g} | " + " | ".join(cells) + " |", flush=True)
