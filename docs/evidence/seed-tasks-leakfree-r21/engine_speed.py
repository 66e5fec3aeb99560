"""Engine ms per token of each run's windows, at equal occupancy (windows running at once) and context.

Input: the CSV of
    select j.workload, w.job_id, w.index, extract(epoch from w.started_at), extract(epoch from w.ended_at),
           w.compute_s, w.num_tokens, j.num_prompt_tokens, (w.priority is not null)::int
    from windows w join jobs j on j.id = w.job_id where j.workload not like '%warmup' order by w.started_at
(psql -At -F, on the run's database). Usage: python engine_speed.py windows.csv > engine-speed.md
"""
import csv, collections, statistics as st, sys
rows = list(csv.reader(open(sys.argv[1])))
runs = collections.OrderedDict()
for r in rows:
    runs.setdefault(r[0], []).append((int(r[2]), float(r[3]), float(r[4]), float(r[5]), int(r[6]), int(r[7]), int(r[8])))
print("| run (workload) | windows | yields | ms/token, all | at occupancy 4 | context < 300 tokens, occupancy 4 | context >= 300, occupancy 4 |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for name, ws in runs.items():
    def occ(w):
        mid = (w[1] + w[2]) / 2
        return sum(1 for o in ws if o[1] <= mid <= o[2])
    ms = [(1000 * w[3] / max(w[4], 1), occ(w), w[5] + 50 * w[0]) for w in ws]
    full = [m for m, o, _ in ms if o == 4]
    short = [m for m, o, c in ms if o == 4 and c < 300]
    long_ = [m for m, o, c in ms if o == 4 and c >= 300]
    print(f"| {name.split('-', 1)[-1]} | {len(ws)} | {sum(w[6] for w in ws)} | {st.mean(m for m, _, _ in ms):.1f} | "
          f"{st.mean(full):.1f} ({len(full)}) | {st.mean(short):.1f} ({len(short)}) | {st.mean(long_):.1f} ({len(long_)}) |")
