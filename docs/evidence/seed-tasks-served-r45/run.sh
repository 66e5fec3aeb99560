#!/bin/bash
# Run 45: run 44's protocol and workload (left-out seed tasks, Gamma arrivals at 0.7 jobs/s, the forced greedy
# lengths of run 22), with the predictor whose prompt prior reads the served model's own hidden states
# (2026-12-07: `--prior-encoder served-model`, the default since), trained without seed tasks. A natural pass for
# the guard's evidence, then FCFS, ISRTF twice and FCFS again with the exact-length bound, each a fresh
# `elis compare` stack on one database.
#   bash docs/evidence/seed-tasks-served-r45/run.sh [RUN_PREFIX]
set -x
cd "$(dirname "$0")/../../.."
source .venv/bin/activate
export HF_HUB_OFFLINE=1
PREFIX=${1:-r45}
CKPT=runs/ckpt-noseed-served
if [ ! -f $CKPT/predictor.pt ]; then
  date
  elis predictor train --kind ranker --prior-encoder served-model --exclude-source seed_tasks \
      --out $CKPT/predictor.pt --threads 2
fi
export ELIS_PREDICTOR_CHECKPOINT=$CKPT/predictor.pt ELIS_LEVEL_EDGES=$CKPT/level_edges.json
DB=postgresql+psycopg2://postgres@127.0.0.1:5432/elis_ev45
W="--prompts docs/evidence/workloads/seed_tasks_100.jsonl --num 100 --seed 1 --rate 0.7 --max-tokens 512 --temperature 0 --slots 4 --database-url $DB"
L="--lengths-from docs/evidence/seed-tasks-leakfree-r22/greedy-2rounds/records-fcfs.csv --no-warmup"
for step in "natural:isrtf:--no-bound" "fcfs-1:fcfs:--no-bound" "isrtf-1:isrtf:--no-bound" "isrtf-2:isrtf:--no-bound" \
            "fcfs-2:fcfs:"; do
  IFS=: read -r name policy bound <<< "$step"
  date
  lengths=$L
  [ "$name" = natural ] && lengths=""
  elis compare $W $lengths --policies "$policy" $bound --out-dir "runs/evidence/$PREFIX-$name"
done
date
echo DONE
