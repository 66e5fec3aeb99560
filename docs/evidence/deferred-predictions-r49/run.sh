#!/bin/bash
# Run 49: the deferred admission prediction A/B (off, on, off, on) at r47's light load, on r47's FCFS lengths.
cd "$(dirname "$0")/../../.."
for arm in off-1 on-1 off-2 on-2; do
  flag=$([ "${arm%-*}" = on ] && echo true || echo false)
  ELIS_DEFER_IDLE_PREDICTIONS=$flag HF_HUB_OFFLINE=1 timeout 1200 .venv/bin/elis compare \
    --workload ../shared/data/alpaca_5000.json --num 40 --arrivals gamma --rate 0.5 --max-tokens 256 --slots 4 \
    --policies fcfs --no-bound --lengths-from docs/evidence/admission-wait-r47/records-fcfs.csv \
    --out-dir runs/r49-defer-$arm > runs/r49-defer-$arm.log 2>&1
  echo "$arm rc $?"
done
