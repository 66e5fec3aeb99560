#!/bin/bash
# Run 52: why do short jobs wait longer under live ISRTF than the simulator says with the same predictions? Run 46's
# workload (left-out seed tasks' prompts, Gamma arrivals at 0.7 jobs/s, run 22's forced greedy lengths) on the
# shipped checkpoint: a natural pass for the guard's evidence, then ISRTF, then FCFS with the exact-length bound,
# each a fresh `elis compare` stack on one database kept for the per-window analysis (analyze.py).
#   bash docs/evidence/diag-r52/run.sh
set -x
cd "$(dirname "$0")/../../.."
source .venv/bin/activate
export HF_HUB_OFFLINE=1
DB=postgresql+psycopg2://postgres@127.0.0.1:5432/elis_diag52
W="--prompts docs/evidence/workloads/seed_tasks_100.jsonl --num 100 --seed 1 --rate 0.7 --max-tokens 512 --temperature 0 --slots 4 --database-url $DB"
L="--lengths-from docs/evidence/seed-tasks-leakfree-r22/greedy-2rounds/records-fcfs.csv --no-warmup"
for step in "natural:isrtf:--no-bound" "isrtf:isrtf:--no-bound" "fcfs:fcfs:"; do
  IFS=: read -r name policy bound <<< "$step"
  date
  lengths=$L
  [ "$name" = natural ] && lengths=""
  elis compare $W $lengths --policies "$policy" $bound --out-dir "runs/evidence/r52-$name"
done
date
echo DONE
