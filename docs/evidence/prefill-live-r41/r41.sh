#!/usr/bin/env bash
# Run 41 (2026-12-06, night): a prompt's prefill counted as work, live. Two `elis compare` calls, each its own
# stack (a fresh engine, so every prompt's prefill is cold, as real traffic's is; no warm-up), on the same
# workload (make_workload.py): SRTF-oracle on output tokens alone, then SRTF-oracle counting the prefill.
set -euo pipefail
cd "$(dirname "$0")/../../.."
W=docs/evidence/prefill-live-r41/workload.jsonl
OUT=runs/evidence/r41
common=(--workload "$W" --max-tokens 256 --no-bound --no-warmup --slots 4)
ELIS_PREFILL_WEIGHT=0 .venv/bin/elis compare "${common[@]}" --policies srtf-oracle --out-dir $OUT/srtf-weight0
# (planned: FCFS between them; dropped after the first call took 16 minutes, an overload: each run's same-work
# reading, its jobs' mean JCT over the FCFS order of the same jobs on its own slots, stands in for it)
.venv/bin/elis compare "${common[@]}" --policies srtf-oracle --out-dir $OUT/srtf-weight-default
