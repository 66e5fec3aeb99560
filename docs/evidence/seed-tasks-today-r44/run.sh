#!/bin/bash
# Run 44: run 43's protocol on a faster engine (2026-12-07, later: bfloat16, about 33 ms a decode step at 4 slots
# against run 43's 114-135 ms), a milder overload than run 43's: today's defaults live on run 37's
# workload (left-out seed tasks): a natural pass for the guard's evidence, then FCFS, ISRTF twice and FCFS again
# with the exact-length bound, each a fresh `elis compare` stack on one database.
set -x
cd /work/main
source .venv/bin/activate
export HF_HUB_OFFLINE=1
if [ ! -f runs/ckpt-noseed4/predictor.pt ]; then
  date
  elis predictor train --kind ranker --exclude-source seed_tasks --out runs/ckpt-noseed4/predictor.pt --threads 2
fi
export ELIS_PREDICTOR_CHECKPOINT=runs/ckpt-noseed4/predictor.pt ELIS_LEVEL_EDGES=runs/ckpt-noseed4/level_edges.json
DB=postgresql+psycopg2://postgres@127.0.0.1:5432/elis_ev44
W="--prompts docs/evidence/workloads/seed_tasks_100.jsonl --num 100 --seed 1 --rate 0.7 --max-tokens 512 --temperature 0 --slots 4 --database-url $DB"
L="--lengths-from docs/evidence/seed-tasks-leakfree-r22/greedy-2rounds/records-fcfs.csv --no-warmup"
date
elis compare $W --policies isrtf --no-bound --out-dir runs/evidence/r44-natural
date
elis compare $W $L --policies fcfs --no-bound --out-dir runs/evidence/r44-fcfs-1
date
elis compare $W $L --policies isrtf --no-bound --out-dir runs/evidence/r44-isrtf-1
date
elis compare $W $L --policies isrtf --no-bound --out-dir runs/evidence/r44-isrtf-2
date
elis compare $W $L --policies fcfs --out-dir runs/evidence/r44-fcfs-2
date
echo DONE
