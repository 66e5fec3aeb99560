#!/bin/bash
# Run 38: the yield margin 0.5 / gate 75% (today's defaults) against 0.9 / 90%, live, on left-out Alpaca (run 13's
# 100 prompts and lengths), ABBA, after a natural pass in a new database.
set -x
cd /work/main
source .venv/bin/activate
export HF_HUB_OFFLINE=1 ELIS_PREDICTOR_CHECKPOINT=runs/ckpt-noalpaca4/predictor.pt ELIS_LEVEL_EDGES=runs/ckpt-noalpaca4/level_edges.json
DB=postgresql+psycopg2://postgres@127.0.0.1:5432/elis_ev38
W="--prompts docs/evidence/workloads/alpaca_unseen_100.jsonl --num 100 --seed 1 --rate 0.7 --max-tokens 512 --temperature 0 --slots 4 --database-url $DB"
L="--lengths-from docs/evidence/alpaca-leakfree-trusted-r13/natural-records-fcfs.csv --no-warmup"
OLD="env ELIS_YIELD_UNCERTAINTY=0.9 ELIS_GUARD_PREEMPT_PRECISION=0.9"
date
elis compare $W --policies isrtf --no-bound --out-dir runs/evidence/r38-natural
date
elis compare $W $L --policies fcfs --no-bound --out-dir runs/evidence/r38-fcfs-1
date
elis compare $W $L --policies isrtf --no-bound --out-dir runs/evidence/r38-new-1
date
$OLD elis compare $W $L --policies isrtf --no-bound --out-dir runs/evidence/r38-old-1
date
$OLD elis compare $W $L --policies isrtf --no-bound --out-dir runs/evidence/r38-old-2
date
elis compare $W $L --policies isrtf --no-bound --out-dir runs/evidence/r38-new-2
date
elis compare $W $L --policies fcfs --out-dir runs/evidence/r38-fcfs-2
date
echo DONE
