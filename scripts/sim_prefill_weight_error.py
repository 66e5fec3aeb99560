"""What does a wrong prefill weight cost? The service orders newcomers by output + weight x prompt tokens; the
right weight is the engine's own (prefill s/token x slots / decode step s). Until 2026-12-07 the service took
the bundled profile's (0.248, a 2-core CPU measured offline) on every machine; now each worker measures its own
at start-up (docs/scheduling.md, "A prompt's prefill is work"). Here the simulated engine keeps its true costs
while the service's scheduler orders by a multiple of its true weight (0 = output alone, 1 = measured right):
exact-length SJF and SRTF-oracle, and ISRTF under a noisy predictor (persistent lognormal sigma 0.5), mean JCT
over FCFS's, on the Azure 2023 conversation lengths, 1 worker x 4 slots, Gamma arrivals (CV 1.17).

Engines: the bundled profile (true weight 0.248); the same with the prefill 2.3x dearer per token (true weight
0.571, where the bundled 0.248 is 0.43x); and a GPU-like one whose prefill is 10x cheaper per token against its
step (true weight 0.025, where the bundled 0.248 is 10x). (This machine's serving path measured 0.10-0.16: the
bundled weight 1.6-2.5x.)

Usage: python scripts/sim_prefill_weight_error.py [LOAD] [JOBS] [MULTIPLES]
  LOAD       default 0.8
  JOBS       default 2000
  MULTIPLES  default 0,0.25,0.5,1,2,4,10 (of each engine's true weight)
"""
import dataclasses
import sys

from elis.replay.workload import read_azure_trace, synthetic_workload
from elis.scheduling.policy import make_policy
from elis.scheduling.work import prefill_weight
from elis.simulator.core import SimConfig, simulate
from elis.simulator.engine_profile import EngineProfile
from elis.simulator.figures import PredictorSpec, measure_capacity, service_scheduler

load = float(sys.argv[1]) if len(sys.argv) > 1 else 0.8
num_jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
multiples = [float(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "0,0.25,0.5,1,2,4,10").split(",")]
config = SimConfig(1, 4, 50)
pool = read_azure_trace(None)
bundled = EngineProfile.load(None)
engines = {
    "bundled profile": bundled,
    "prefill 2.3x dearer": dataclasses.replace(bundled, prefill_s_per_token=bundled.prefill_s_per_token * 2.3),
    "GPU-like: prefill 10x cheaper": dataclasses.replace(bundled, prefill_s_per_token=bundled.prefill_s_per_token / 10),
}
policies = {"SJF (exact)": ("sjf", None), "SRTF-oracle": ("srtf-oracle", None),
            "ISRTF, persistent sigma 0.5": ("isrtf", PredictorSpec("persistent", 0.5))}
print(f"load {load:g}, {num_jobs} jobs; mean JCT / FCFS's, the service ordering by a multiple of the engine's true "
      "prefill weight\n")
print("| engine (true weight) | policy | " + " | ".join(f"{m:g}x" for m in multiples) + " |")
print("| --- | --- | " + " | ".join("---:" for _ in multiples) + " |")
for engine_name, profile in engines.items():
    true = prefill_weight(profile.prefill_s_per_token, profile.decode_step(config.num_slots), config.num_slots)
    jobs = synthetic_workload(num_jobs, "gamma", load * measure_capacity(profile, config, pool), None, seed=0,
                              pool=pool)
    fcfs = simulate(jobs, make_policy("fcfs"), profile, config, scheduler=service_scheduler("fcfs")).summary.mean_jct
    for policy_name, (policy, predictor) in policies.items():
        cells = []
        for multiple in multiples:
            # Exact lengths start trusted, as a perfect predictor would earn; the noisy one earns it on its jobs.
            scheduler = service_scheduler(policy, prefill_weight=multiple * true,
                                          guard_start_in_fallback=predictor is not None)
            model = predictor.build(0) if predictor else None
            mean = simulate(jobs, make_policy(policy), profile, config, length_model=model,
                            scheduler=scheduler).summary.mean_jct
            cells.append(f"{mean / fcfs:.3f}")
        print(f"| {engine_name} ({true:.3f}) | {policy_name} | " + " | ".join(cells) + " |", flush=True)
