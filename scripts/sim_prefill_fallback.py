"""The quality guard's fallback: FCFS, or the known prefill first? (docs/scheduling.md, "The fallback orders by
the prefill".)

When the quality guard finds that predictions do not rank, a length-aware policy falls back. A prompt's prefill
is known exactly even then: `PrefillFirst` orders admissions by the prefill still to pay, without pre-emption
(opt-in: `ELIS_FALLBACK_BY_PREFILL`; live in run 42 it did not repeat the gain), where the service orders by
arrival. Here ISRTF runs under the service's whole scheduler (quality guard, outcome guard, aging, margin) with
a predictor that knows nothing (a constant: the guard holds its fallback most of the run; the table says how
much), once with each fallback, beside FCFS and the exact-length bound (SRTF-oracle with the prefill counted) on
the same jobs: the Azure 2023 conversation lengths (their real joint prompt/output lengths), 1 worker x 4 slots,
Gamma arrivals (CV 1.17). Prints mean JCT and p99 over FCFS's, the outcome guard's trips and the share of the
run's time in the guard's fallback.

Usage: python scripts/sim_prefill_fallback.py [LOADS] [JOBS] [MAX_PROMPT_TOKENS] [anti]
  LOADS              default 0.5,0.7,0.8,0.9
  JOBS               default 2000
  MAX_PROMPT_TOKENS  cap the trace's prompts (e.g. 512 or 128: short prompts); 0 or none: no cap
  anti               the adversary: re-pair the trace's lengths so the longest prompts have the shortest outputs
                     (rank-reversed), where the least prefill first is the longest output first
"""
import dataclasses
import sys
from collections import Counter

from elis.replay.workload import read_azure_trace, synthetic_workload
from elis.scheduling.policy import make_policy
from elis.simulator.core import SimConfig, simulate
from elis.simulator.engine_profile import EngineProfile
from elis.simulator.figures import measure_capacity, profile_weight, service_scheduler
from elis.simulator.length_models import LengthModel


def count_orders(scheduler) -> Counter:
    """The order in force after each of the scheduler's refreshes (every 10 simulated seconds): where the run
    spent its time (guard fallback, trusted, outcome guard)."""
    orders: Counter = Counter()
    observe = scheduler.observe

    def counted(*args, **kwargs):
        changed = observe(*args, **kwargs)
        orders[scheduler.ordering()] += 1
        return changed

    scheduler.observe = counted
    return orders


class ConstantOutput(LengthModel):
    """Knows nothing of the output: predicts `tokens` remaining, whatever the job (SJF reads it at admission)."""

    name = "constant"

    def __init__(self, tokens: float) -> None:
        self.tokens = tokens

    def predict(self, true_remaining: int, step: int, job_id: str = "") -> float:
        return self.tokens


loads = [float(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "0.5,0.7,0.8,0.9").split(",")]
num_jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
cap_prompt = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "none" else None
anti = len(sys.argv) > 4 and sys.argv[4] == "anti"
profile = EngineProfile.load(None)
config = SimConfig(1, 4, 50)
pool = read_azure_trace(None)
if cap_prompt:
    pool = [dataclasses.replace(j, num_prompt_tokens=min(j.num_prompt_tokens, cap_prompt)) for j in pool]
if anti:
    by_prompt = sorted(pool, key=lambda j: j.num_prompt_tokens)
    outputs = sorted((j.num_output_tokens for j in pool), reverse=True)
    pool = [dataclasses.replace(j, num_output_tokens=o) for j, o in zip(by_prompt, outputs)]
capacity = measure_capacity(profile, config, pool)
weight = profile_weight(profile, config.num_slots)  # ELIS_PREFILL_WEIGHT when set, as the service
mean_output = sum(j.num_output_tokens for j in pool) / len(pool)
print(f"prefill weight {weight:.3f}; mean prompt {sum(j.num_prompt_tokens for j in pool) / len(pool):.0f} tokens, "
      f"mean output {mean_output:.0f}; {num_jobs} jobs; C = the mean output"
      f"{'; ADVERSARY: outputs rank-reversed against prompts' if anti else ''}\n")
arms = {
    "ISRTF, FCFS fallback": ("isrtf", ConstantOutput(mean_output), {"fallback_by_prefill": False}),
    "ISRTF, prefill fallback": ("isrtf", ConstantOutput(mean_output), {"fallback_by_prefill": True}),
    "bound (SRTF-oracle)": ("srtf-oracle", None, {}),
}
print("| load | FCFS mean s | " + " | ".join(f"{name}: mean / p99 (trips; share of time in the guard's fallback)"
                                          for name in arms) + " |")
print("| ---: | ---: | " + " | ".join("---:" for _ in arms) + " |")
for load in loads:
    jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=0, pool=pool)
    fcfs = simulate(jobs, make_policy("fcfs"), profile, config, scheduler=service_scheduler("fcfs")).summary
    cells = []
    for policy, model, overrides in arms.values():
        scheduler = service_scheduler(policy, **overrides)
        orders = count_orders(scheduler)
        result = simulate(jobs, make_policy(policy), profile, config, length_model=model, scheduler=scheduler).summary
        fallback = sum(n for order, n in orders.items() if "guard fallback" in order) / max(1, sum(orders.values()))
        cells.append(f"{result.mean_jct / fcfs.mean_jct:.3f} / {result.p99_jct / fcfs.p99_jct:.3f} "
                     f"({scheduler.outcome.trips}; {100 * fallback:.0f}%)")
    print(f"| {load:g} | {fcfs.mean_jct:.1f} | " + " | ".join(cells) + " |", flush=True)
