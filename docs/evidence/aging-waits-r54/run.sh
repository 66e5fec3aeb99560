#!/bin/bash
# Run 54: does counting only a job's waits toward aging (ELIS_AGING_SERVICE_FACTOR=1) help ISRTF live, as the
# replay of run 52 said (1.13x -> 1.06x the bound at the live rate)? Run 52's workload and database (the guard's
# evidence from its natural pass), ISRTF with the factor 0 (the default) and 1, ABBA.
#   bash docs/evidence/aging-waits-r54/run.sh
set -x
cd "$(dirname "$0")/../../.."
source .venv/bin/activate
export HF_HUB_OFFLINE=1
DB=postgresql+psycopg2://postgres@127.0.0.1:5432/elis_diag52
W="--prompts docs/evidence/workloads/seed_tasks_100.jsonl --num 100 --seed 1 --rate 0.7 --max-tokens 512 --temperature 0 --slots 4 --database-url $DB"
L="--lengths-from docs/evidence/seed-tasks-leakfree-r22/greedy-2rounds/records-fcfs.csv --no-warmup"
for step in whole-1:0 waits-1:1 waits-2:1 whole-2:0; do
  IFS=: read -r name factor <<< "$step"
  date
  ELIS_AGING_SERVICE_FACTOR=$factor elis compare $W $L --policies isrtf --no-bound --out-dir "runs/evidence/r54-$name"
done
date
echo DONE
