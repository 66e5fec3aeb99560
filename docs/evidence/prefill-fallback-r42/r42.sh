#!/usr/bin/env bash
# Run 42 (2026-12-07): the quality guard's fallback ordered by the prefill, live. Three `elis compare` calls, each
# its own stack (a fresh engine: every prompt's prefill is cold, as real traffic's is; no warm-up), on the same
# workload (make_workload.py): FCFS, ISRTF (forced lengths: the live guard never judges them, so it holds its
# fallback, now the prefill order, for the whole run) and the exact-length bound (SRTF-oracle).
set -euo pipefail
cd "$(dirname "$0")/../../.."
W=docs/evidence/prefill-fallback-r42/workload.jsonl
OUT=runs/evidence/r42
common=(--workload "$W" --max-tokens 256 --no-bound --no-warmup --slots 4)
for policy in fcfs isrtf srtf-oracle; do
  .venv/bin/elis compare "${common[@]}" --policies $policy --out-dir $OUT/$policy
done
