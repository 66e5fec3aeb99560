#!/usr/bin/env bash
# The pre-emption gate on the sign precision vs the gain share, in both simulations (as run 2026-12-06).
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=docs/evidence/guard-gain-2026-12-06
PY=.venv/bin/python
export HF_HUB_OFFLINE=1
# As run: before the prefill weight existed (d13fc49); today's code needs it off to reproduce these numbers.
export ELIS_PREFILL_WEIGHT=0
for measure in sign gain; do
  $PY scripts/sim_margin_replayed.py $(cat docs/evidence/margin-replayed/groups.txt) --guard --measure $measure \
    --setting guard_preempt_precision --values 0.6,0.7,0.75,0.8,0.9 > $out/replayed-$measure.md
done
$PY scripts/sim_guard_settings.py 0.7,0.8 2000 \
  "sign75:;gain60:guard_preempt_measure=gain,guard_preempt_precision=0.6;gain75:guard_preempt_measure=gain;gain90:guard_preempt_measure=gain,guard_preempt_precision=0.9;none:yield_uncertainty=1.0" \
  > $out/synthetic.md
