#!/usr/bin/env bash
# A prompt's prefill counted as work (ELIS_PREFILL_WEIGHT), as run 2026-12-06: exact lengths, the service's
# scheduler under noisy predictors (Azure 2023 lengths), and eight live runs replayed with their own predictions.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=docs/evidence/prefill-work-2026-12-06
PY=.venv/bin/python
export HF_HUB_OFFLINE=1
$PY scripts/sim_prefill_work.py 0.5,0.7,0.8,0.9 2000 > $out/exact.md
$PY scripts/sim_prefill_work.py 0.5,0.7,0.8,0.9 2000 512 > $out/exact-prompts-512.md
$PY scripts/sim_margin_replayed.py $(cat docs/evidence/margin-replayed/groups.txt) --guard \
  --setting prefill_weight --values 0,0.248 > $out/replayed.md
$PY scripts/sim_guard_settings.py 0.7,0.8,0.9 2000 \
  "default:;weight 0:prefill_weight=0;no pre-emption:yield_uncertainty=1.0" > $out/synthetic.md
# What the workloads this machine replays live would show (the first 80 jobs, prompts capped at 1,024 tokens).
$PY scripts/sim_prefill_work.py 0.8,0.9 80 1024 > $out/short-workloads.md
