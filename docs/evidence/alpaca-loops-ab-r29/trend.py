"""Run 29's four forced ISRTF runs got faster in run order (19.9, 19.3, 18.6, 17.3 s). Was it the service's state
(what each service learned from the database before it started) or the runs' own variance? Prints what the four
runs shared and where they differed. Usage (from this folder): python3 trend.py"""
import csv
import json
import statistics as st

RUNS = ["on-1", "off-1", "on-2", "off-2"]  # in the order they ran


def load(path):
    return {r["item"]: r for r in csv.DictReader(open(path))}


runs = {k: load(f"{k}/records-isrtf.csv") for k in RUNS}
fcfs = load("on-1/records-fcfs.csv")
items = sorted(fcfs, key=int)
first = runs[RUNS[0]]
print("admission predictions identical in all four:",
      all(runs[k][i]["initial_prediction"] == first[i]["initial_prediction"] for k in RUNS for i in items))
def offset(run, item):
    return float(runs[run][item]["arrival"]) - float(runs[run][items[0]]["arrival"])


print(f"arrival offsets: at most {max(abs(offset(k, i) - offset(RUNS[0], i)) for k in RUNS for i in items):.2f} s "
      "from the first run's (submission jitter)")
print("| run | start state (guard) | output tokens | window compute s | re-predictions | mean queuing s "
      "| mean JCT s | JCT < 100 tokens | 100-300 | >= 300 |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for k in RUNS:
    v = runs[k]
    guard = json.load(open(f"{k}/manifest.json"))["runs"]["isrtf"]["guard_at_start"]
    state = f"tau {guard['judged_tau']}, {guard['preempt_reason'].split(': ')[1].split(' (')[0]}"
    buckets = []
    for lo, hi in ((0, 100), (100, 300), (300, 10**6)):
        chosen = [i for i in items if lo <= int(fcfs[i]["num_output_tokens"]) < hi]
        buckets.append(f"{st.mean(float(v[i]['jct']) for i in chosen):.1f}")
    print(f"| {k} | {state} | {sum(int(r['num_output_tokens']) for r in v.values())} "
          f"| {sum(float(x) for r in v.values() for x in r['window_compute_s'].split()):.0f} "
          f"| {sum(1 for r in v.values() for p in r['predictions'].split() if p != 'nan')} "
          f"| {st.mean(float(r['queuing_delay']) for r in v.values()):.1f} "
          f"| {st.mean(float(r['jct']) for r in v.values()):.2f} | {' | '.join(buckets)} |")
