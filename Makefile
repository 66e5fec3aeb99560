# `make demo` and `make test` do all set-up on a fresh machine (see README.md).
.PHONY: setup services demo test test-fast bench

setup:
	bash scripts/setup.sh

services:
	bash scripts/services.sh

demo: setup
	bash scripts/services.sh --demo
	HF_HUB_OFFLINE=1 .venv/bin/elis demo

test: setup services
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q

test-fast: setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q -m "not integration and not e2e and not slow"

bench: setup services
	HF_HUB_OFFLINE=1 .venv/bin/elis bench service
