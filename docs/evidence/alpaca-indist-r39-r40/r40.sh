#!/bin/bash
# Run 40: run 39 again with the outcome guard counting slots right (a millisecond hand-over overlap made a
# 4-slot worker read as 5 and falsely tripped both ISRTF arms of run 39 near their end). Today's defaults,
# prompts of a source the checkpoint trained on, 0.8 jobs/s, run 23's greedy lengths forced), a natural pass in a
# new database, then FCFS, ISRTF, ISRTF, FCFS and the exact-length bound.
set -x
cd /work/main
source .venv/bin/activate
export HF_HUB_OFFLINE=1
DB=postgresql+psycopg2://postgres@127.0.0.1:5432/elis_ev40
W="--prompts docs/evidence/workloads/alpaca_unseen_100.jsonl --num 60 --seed 1 --rate 0.8 --max-tokens 512 --temperature 0 --slots 4 --database-url $DB"
L="--lengths-from docs/evidence/alpaca-indist-r23/round1/records-fcfs.csv --no-warmup"
date
elis compare $W --policies isrtf --no-bound --out-dir runs/evidence/r40-natural
date
elis compare $W $L --policies fcfs --no-bound --out-dir runs/evidence/r40-fcfs-1
date
elis compare $W $L --policies isrtf --no-bound --out-dir runs/evidence/r40-isrtf-1
date
elis compare $W $L --policies isrtf --no-bound --out-dir runs/evidence/r40-isrtf-2
date
elis compare $W $L --policies fcfs --out-dir runs/evidence/r40-fcfs-2
date
echo DONE
