#!/bin/bash
# Run 46: run 45 again (its script, its workload, its checkpoint recipe) after the API began storing the prompt
# prior's admission score with the job for the worker to reuse (migration 0008). Then the replay of its ISRTF
# runs, as run 45's, and the re-prediction cost per window from the run's database.
#   bash docs/evidence/seed-tasks-served-r46/run.sh
set -e
cd "$(dirname "$0")/../../.."
bash docs/evidence/seed-tasks-served-r45/run.sh r46
R=runs/evidence
ELIS_MAX_WAIT_S=50 .venv/bin/elis simulate replay $R/r46-isrtf-1/records-isrtf.csv $R/r46-isrtf-2/records-isrtf.csv \
    -p fcfs,isrtf,srtf-oracle --vary yield_uncertainty=0,0.25,0.5 --scales 1,1.4,1.8 -o runs/r46-replay-margin
psql -h 127.0.0.1 -U postgres -d elis_ev45 -c "select j.workload, (w.index = 0) as first_window, count(*) as windows,
    round(avg(w.predict_s)::numeric, 3) as mean_predict_s, round(max(w.predict_s)::numeric, 3) as max_predict_s,
    count(j.prior_score) as with_admission_prior_score
  from windows w join jobs j on j.id = w.job_id where w.predict_s is not null group by 1, 2 order by 1, 2"
psql -h 127.0.0.1 -U postgres -d elis_ev45 -c "
with w as (select j.workload, w.* from windows w join jobs j on j.id=w.job_id)
select workload, count(*) filter (where priority is not null) as yields,
  round(avg(extract(epoch from started_at-enqueued_at)) filter (where index>0 and enqueued_at is not null)::numeric,2) as mean_resume_wait_s,
  round(sum(compute_s)::numeric,1) as compute_s, round(sum(overhead_s)::numeric,1) as overhead_s, round(avg(compute_s/nullif(num_tokens,0))::numeric*1000,1) as ms_per_token_avg,
  count(*) as windows
from w group by 1 order by 1"
