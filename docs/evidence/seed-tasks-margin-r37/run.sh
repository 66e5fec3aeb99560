#!/bin/bash
# Run 37: the yield margin u=0.5 with the pre-emption gate at 75% against the defaults (u=0.9, gate 90%), live,
# on run 35's workload (left-out seed tasks), after run 36's natural pass in the same database.
set -x
cd /work/main
source .venv/bin/activate
export HF_HUB_OFFLINE=1 ELIS_PREDICTOR_CHECKPOINT=runs/ckpt-noseed4/predictor.pt ELIS_LEVEL_EDGES=runs/ckpt-noseed4/level_edges.json
DB=postgresql+psycopg2://postgres@127.0.0.1:5432/elis_ev36
W="--prompts docs/evidence/workloads/seed_tasks_100.jsonl --num 100 --seed 1 --rate 0.7 --max-tokens 512 --temperature 0 --slots 4 --database-url $DB"
L="--lengths-from docs/evidence/seed-tasks-leakfree-r22/greedy-2rounds/records-fcfs.csv --no-warmup"
NEW="env ELIS_YIELD_UNCERTAINTY=0.5 ELIS_GUARD_PREEMPT_PRECISION=0.75"
date
elis compare $W $L --policies fcfs --no-bound --out-dir runs/evidence/r37-fcfs-1
date
elis compare $W $L --policies isrtf --no-bound --out-dir runs/evidence/r37-default-1
date
$NEW elis compare $W $L --policies isrtf --no-bound --out-dir runs/evidence/r37-new-1
date
$NEW elis compare $W $L --policies isrtf --no-bound --out-dir runs/evidence/r37-new-2
date
elis compare $W $L --policies isrtf --no-bound --out-dir runs/evidence/r37-default-2
date
elis compare $W $L --policies fcfs --out-dir runs/evidence/r37-fcfs-2
date
echo DONE
