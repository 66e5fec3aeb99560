"""Run 42's workload: the Azure 2023 conversation lengths (prompts capped at 1,536 tokens, outputs at 256),
Gamma arrivals (CV 1.17, seed 0) at LOAD x the simulator's estimate of one 4-slot worker's capacity, each prompt
a filler of its own words (no shared prefix); and what the simulator predicts for FCFS, ISRTF held in the quality
guard's fallback (its predictor knows nothing of these lengths: a constant) and the exact-length bound.

Usage: python make_workload.py OUT.jsonl [LOAD] [JOBS]   (defaults 1.0, 48; run 42: 1.0 48)
"""
import dataclasses
import json
import sys

from elis.replay.readers import filler_messages
from elis.replay.workload import read_azure_trace, synthetic_workload
from elis.scheduling.policy import make_policy
from elis.simulator.core import SimConfig, simulate
from elis.simulator.engine_profile import EngineProfile
from elis.simulator.figures import measure_capacity, service_scheduler
from elis.simulator.length_models import LengthModel


class ConstantOutput(LengthModel):
    name = "constant"

    def predict(self, true_remaining: int, step: int, job_id: str = "") -> float:
        return 142.0


out = sys.argv[1]
load = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
num_jobs = int(sys.argv[3]) if len(sys.argv) > 3 else 48
profile, config = EngineProfile.load(None), SimConfig(1, 4, 50)
pool = [dataclasses.replace(j, num_prompt_tokens=min(j.num_prompt_tokens, 1536),
                            num_output_tokens=min(j.num_output_tokens, 256)) for j in read_azure_trace(None)]
rate = load * measure_capacity(profile, config, pool)
jobs = synthetic_workload(num_jobs, "gamma", rate, None, seed=0, pool=pool)
with open(out, "w") as f:
    for i, job in enumerate(jobs):
        prompt = filler_messages(job.num_prompt_tokens, key=i)[0]["content"]
        f.write(json.dumps({"arrival": round(job.arrival, 3), "prompt": prompt,
                            "output_tokens": job.num_output_tokens}) + "\n")
fcfs = simulate(jobs, make_policy("fcfs"), profile, config, scheduler=service_scheduler("fcfs")).summary.mean_jct
print(f"{num_jobs} jobs, rate {rate:.3f} jobs/s, last arrival {jobs[-1].arrival:.0f} s; simulated FCFS mean JCT "
      f"{fcfs:.1f} s")
for policy, model in (("isrtf", ConstantOutput()), ("srtf-oracle", None)):
    scheduler = service_scheduler(policy, fallback_by_prefill=True)  # as run 42 ran (then the default)
    mean = simulate(jobs, make_policy(policy), profile, config, length_model=model,
                    scheduler=scheduler).summary.mean_jct
    print(f"simulated {policy} ({scheduler.ordering()} at the end): {mean:.1f} s, {mean / fcfs:.3f}x FCFS")
