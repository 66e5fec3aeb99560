#!/bin/bash
# Run 53: under FCFS a job's admission prediction is only the guard's evidence; since 2026-12-08 the API queues
# such a job first and predicts it in the background whether or not a slot is free. Run 52's workload and database
# (left-out-of-nothing seed tasks on the shipped checkpoint, Gamma arrivals at 0.7 jobs/s, run 22's forced greedy
# lengths), FCFS with deferral off (every admission waits for its prediction) and on, ABBA.
#   bash docs/evidence/fcfs-deferred-r53/run.sh
set -x
cd "$(dirname "$0")/../../.."
source .venv/bin/activate
export HF_HUB_OFFLINE=1
DB=postgresql+psycopg2://postgres@127.0.0.1:5432/elis_diag52
W="--prompts docs/evidence/workloads/seed_tasks_100.jsonl --num 100 --seed 1 --rate 0.7 --max-tokens 512 --temperature 0 --slots 4 --database-url $DB"
L="--lengths-from docs/evidence/seed-tasks-leakfree-r22/greedy-2rounds/records-fcfs.csv --no-warmup"
for step in off-1:false on-1:true on-2:true off-2:false; do
  IFS=: read -r name defer <<< "$step"
  date
  ELIS_DEFER_IDLE_PREDICTIONS=$defer elis compare $W $L --policies fcfs --no-bound --out-dir "runs/evidence/r53-$name"
done
date
echo DONE
