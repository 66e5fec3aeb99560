"""The yield margin on live runs' own predictions: ISRTF's mean and p99 JCT against FCFS for several values of
`yield_uncertainty`, in the simulator, on the jobs of live runs (arrivals, prompt and forced output lengths) with
the predictions the live predictor made for each of them (`elis.simulator.replayed`, as `elis simulate replay`),
the arrivals also compressed and stretched to other loads. The exact-length bound beside them.

The margin was chosen (u = 0.9) on noise models of the predictor; this asks whether the predictor the service
runs now, on the prompts it actually met, is better served by a smaller one.

Usage: python scripts/sim_margin_replayed.py NAME=RECORDS.csv[,MORE.csv] ... [--scales 0.7,1,1.4] [--us 0,0.5,0.9]
[--setting aging_fcfs_factor --values 0.5,1,1.5]
[--guard [--gate 0.75] [--measure gain]] (the first file of a group gives the jobs; every file of it gives
predictions: the records of forced-length runs of one workload). docs/scheduling.md ("The yield margin on the live predictions") has the
results."""
import argparse
import statistics

from elis.simulator.engine_profile import EngineProfile
from elis.simulator.replayed import Arm, read_live_run, replay_live_run

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("groups", nargs="+", help="NAME=RECORDS.csv[,MORE.csv]")
parser.add_argument("--scales", default="0.7,1,1.4", help="arrival rate as multiples of the live run's")
parser.add_argument("--us", "--values", dest="values", default="0,0.3,0.5,0.7,0.9",
                    help="values of the setting (yield_uncertainty unless --setting)")
parser.add_argument("--setting", default="yield_uncertainty", help="the setting to vary for ISRTF")
parser.add_argument("--guard", action="store_true",
                    help="the quality guard on, as the service runs it (starting trusted, as after a natural pass): "
                         "its pre-emption gate judges the yield rule at each margin")
parser.add_argument("--gate", type=float, default=None,
                    help="guard_preempt_precision with --guard (default: the service's)")
parser.add_argument("--measure", choices=("sign", "gain"), default=None,
                    help="guard_preempt_measure with --guard: what the gate bars (default: the service's)")
args = parser.parse_args()
profile = EngineProfile.load(None)
scales = [float(x) for x in args.scales.split(",")]
us = [float(x) for x in args.values.split(",")]
short = "u" if args.setting == "yield_uncertainty" else args.setting
trust = {"guard": True, "guard_start_in_fallback": False} if args.guard else {"guard": False}
if args.guard and args.gate is not None:
    trust["guard_preempt_precision"] = args.gate
if args.guard and args.measure is not None:
    trust["guard_preempt_measure"] = args.measure
arms = ([Arm("fcfs", "fcfs", trust)] + [Arm(f"{short}={u:g}", "isrtf", {**trust, args.setting: u}) for u in us]
        + [Arm("bound", "srtf-oracle", trust)])

print("| workload | rate | FCFS mean JCT s | " + " | ".join(f"ISRTF {short}={u:g}" for u in us)
      + f" | bound | ISRTF p99 / FCFS, {short}=" + ", ".join(f"{u:g}" for u in us) + " |")
print("| --- | ---: | ---: | " + " | ".join("---:" for _ in us) + " | ---: | --- |")
ratios: list[list[float]] = []
tails: list[list[float]] = []
for group in args.groups:
    name, _, files = group.partition("=")
    results = replay_live_run(read_live_run(files.split(",")), arms, scales, profile=profile)
    for scale, runs in results.items():
        fcfs, isrtf = runs["fcfs"], [runs[f"{short}={u:g}"] for u in us]
        ratios.append([s.mean_jct / fcfs.mean_jct for s in isrtf])
        tails.append([s.p99_jct / fcfs.p99_jct for s in isrtf])
        print(f"| {name} | x{scale:g} | {fcfs.mean_jct:.1f} | " + " | ".join(f"{r:.3f}" for r in ratios[-1])
              + f" | {runs['bound'].mean_jct / fcfs.mean_jct:.3f} | "
              + ", ".join(f"{s.p99_jct / fcfs.p99_jct:.2f}" for s in isrtf) + " |")
columns = range(len(us))
print(f"| mean of {len(ratios)} rows | | | " + " | ".join(f"{statistics.mean(r[i] for r in ratios):.3f}" for i in columns)
      + " | | worst row: " + ", ".join(f"{max(r[i] for r in ratios):.3f}" for i in columns)
      + "; p99 / FCFS, mean of rows: " + ", ".join(f"{statistics.mean(r[i] for r in tails):.3f}" for i in columns) + " |")
