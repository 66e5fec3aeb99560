"""Which scheduler settings keep the service within noise of FCFS under pessimistic predictor models?

`elis simulate guard` runs the service's default scheduler against FCFS under four predictor models (persistent
lognormal sigma 0.5 and 1.0, fresh noise sigma 1.0, an old checkpoint's recorded errors) on the Azure 2023
lengths, 1 worker x 4 slots. This script runs the same workloads for several settings of the yield margin and
the pre-emption gate, and prints, per scenario and load, ISRTF's mean JCT over FCFS's with the guard's state at
the end of the run: pre-emption on or off, the yield rule's measured precision and gain share (the share of the
tokens its yields move that the right ones save), the outcome guard's trips.

Usage: python scripts/sim_guard_settings.py [LOADS] [JOBS] [ARMS]
  LOADS  default 0.7,0.8,0.9
  JOBS   default 2000 (as `elis simulate guard`)
  ARMS   ';'-separated NAME:setting=value,... (e.g. "gain75:guard_preempt_measure=gain"; default: today's
         defaults, the old margin and gate, and no pre-emption on predictions)
"""
import sys

from elis.replay.workload import read_azure_trace, synthetic_workload
from elis.scheduling.policy import make_policy
from elis.simulator.core import SimConfig, simulate
from elis.simulator.engine_profile import EngineProfile
from elis.simulator.figures import default_margin_scenarios, measure_capacity, service_scheduler


def arg(i: int, default: str) -> str:
    return sys.argv[i] if len(sys.argv) > i else default


def setting_value(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def parse_arms(text: str) -> dict[str, dict[str, float | str]]:
    arms = {}
    for part in text.split(";"):
        name, _, pairs = part.partition(":")
        arms[name] = {k: setting_value(v) for k, v in (p.split("=") for p in pairs.split(",") if p)}
    return arms


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


loads = [float(x) for x in arg(1, "0.7,0.8,0.9").split(",")]
num_jobs = int(arg(2, "2000"))
arms = parse_arms(arg(3, "default:;u0.9/gate90:yield_uncertainty=0.9,guard_preempt_precision=0.9;"
                         "no pre-emption:yield_uncertainty=1.0"))
profile = EngineProfile.load(None)
config = SimConfig(1, 4, 50)
pool = read_azure_trace(None)
capacity = measure_capacity(profile, config, pool)
print("| predictor | load | " + " | ".join(f"{name}: ISRTF / FCFS (pre-emption, precision, gain share, trips)"
                                          for name in arms)
      + " |")
print("| --- | ---: | " + " | ".join("---" for _ in arms) + " |")
for scenario in default_margin_scenarios():
    for load in loads:
        jobs = synthetic_workload(num_jobs, "gamma", load * capacity, None, seed=0, pool=pool)
        fcfs = simulate(jobs, make_policy("fcfs"), profile, config, scenario.predictor.build(0)).summary.mean_jct
        cells = []
        for overrides in arms.values():
            scheduler = service_scheduler("isrtf", **overrides)
            mean = simulate(jobs, make_policy("isrtf"), profile, config, scenario.predictor.build(0),
                            scheduler=scheduler).summary.mean_jct
            guard, outcome = scheduler.guard, scheduler.outcome
            cells.append(f"{mean / fcfs:.3f} ({'on' if guard.preempting else 'off'}, "
                         f"{percent(guard.measured_precision)}, {percent(guard.measured_gain_share)}, "
                         f"{outcome.trips})")
        print(f"| {scenario.name} | {load:g} | " + " | ".join(cells) + " |", flush=True)
