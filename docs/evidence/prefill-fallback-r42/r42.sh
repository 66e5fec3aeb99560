#!/usr/bin/env bash
# Run 42 (2026-12-07): the quality guard's fallback ordered by the prefill, live. Three `elis compare` calls, each
# its own stack (a fresh engine: every prompt's prefill is cold, as real traffic's is; no warm-up), on the same
# workload (make_workload.py): FCFS, ISRTF (forced lengths: the live guard never judges them, so it holds its
# fallback, now the prefill order, for the whole run) and the exact-length bound (SRTF-oracle).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export ELIS_FALLBACK_BY_PREFILL=true  # the default when run 42 ran; off by default since, after it
W=docs/evidence/prefill-fallback-r42/workload.jsonl
OUT=runs/evidence/r42
common=(--workload "$W" --max-tokens 256 --no-bound --no-warmup --slots 4)
for policy in fcfs isrtf srtf-oracle; do
  .venv/bin/elis compare "${common[@]}" --policies $policy --out-dir $OUT/$policy
done
# Round 2 (after round 1 read mixed): FCFS again (A/A), ISRTF again, and ISRTF with the prefill weight this machine
# measured that hour (prefill 1.4-1.5 ms/token at startup, about 85 ms per decode step at batch 4: 0.07, against
# the bundled profile's 0.248).
for policy in fcfs isrtf; do
  .venv/bin/elis compare "${common[@]}" --policies $policy --out-dir $OUT/round2-$policy
done
ELIS_PREFILL_WEIGHT=0.07 .venv/bin/elis compare "${common[@]}" --policies isrtf --out-dir $OUT/round2-isrtf-w0.07
