"""Run 52's per-window analysis: for each job that ended within 32 tokens and waited more than 3 s under ISRTF,
which windows started while it waited (whose job, new or resumed, at what prediction, promoted or not), and
why did it not start sooner. Reads the run's database.
    .venv/bin/python docs/evidence/diag-r52/analyze.py [WORKLOAD_SUBSTRING] [DB]"""

import sys

import psycopg2

label = sys.argv[1] if len(sys.argv) > 1 else "isrtf"
db = sys.argv[2] if len(sys.argv) > 2 else "elis_diag52"
con = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=db)
cur = con.cursor()
cur.execute("select workload from jobs where workload like %s group by 1 order by min(arrival_at) desc limit 1",
            (f"%{label}",))
workload = cur.fetchone()[0]
cur.execute("""select id, extract(epoch from arrival_at)::float8, extract(epoch from first_started_at)::float8,
                      initial_prediction, num_output_tokens, promoted, queuing_delay_s, jct_s
               from jobs where workload = %s""", (workload,))
jobs = {r[0]: r for r in cur.fetchall()}
t0 = min(j[1] for j in jobs.values())
cur.execute("""select w.job_id, w.index, extract(epoch from w.started_at)::float8,
                      extract(epoch from w.ended_at)::float8, w.prediction_before, w.prediction_after, w.priority,
                      w.num_tokens
               from windows w join jobs j on j.id = w.job_id where j.workload = %s order by w.started_at""",
            (workload,))
windows = cur.fetchall()
print(f"{workload}: {len(jobs)} jobs, {len(windows)} windows, {sum(1 for w in windows if w[6] is not None)} yields")
short = sorted((j for j in jobs.values() if j[4] < 32 and j[6] > 3), key=lambda j: -j[6])
for job_id, arrival, start, pred, out, promoted, qd, jct in short:
    print(f"\njob {job_id[:8]} arrived {arrival - t0:6.1f} s, admission prediction {pred:.0f}, {out} tokens, "
          f"waited {qd:.1f} s, promoted {promoted}")
    running = [w for w in windows if w[2] <= arrival < w[3]]
    print("  running at its arrival: " + ", ".join(
        f"{w[0][:6]} (window {w[1]}, prediction {w[4] if w[4] is None else round(w[4])}, job admitted at "
        f"{jobs[w[0]][3]:.0f})" for w in running))
    began = [w for w in windows if arrival < w[2] < start - 1e-3 and w[0] != job_id]
    for w in began:
        other = jobs[w[0]]
        kind = "first" if w[1] == 0 else "later"  # a later window: after a yield, or the same task going on
        before = w[4] if w[4] is None else round(w[4])
        print(f"  {w[2] - t0:6.1f} s: {kind} window {w[1]} of {w[0][:6]} (admission {other[3]:.0f}, arrived "
              f"{other[1] - t0:.1f}, {other[4]} tokens, promoted {other[5]}, prediction {before})")
