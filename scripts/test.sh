#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The package layers (import-linter), lint + format (ruff) and types (mypy), before the tests.
out=$(.venv/bin/lint-imports --no-cache 2>&1) || { echo "$out"; exit 1; }
.venv/bin/ruff check -q tunelab tests benchmarks
.venv/bin/ruff format --check -q tunelab tests benchmarks
.venv/bin/mypy
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False TOKENIZERS_PARALLELISM=false
# Two workers by default (TUNELAB_TEST_WORKERS=0 runs in one process): much of the suite is
# single-threaded (CLI start-up, imports, model loading, Textual), so two share the 2 cores this was
# sized on; tests/conftest.py gives each worker its share of the cores for torch and llama.cpp
# (oversubscribed, their spinning threads made the suite several times slower). Heavy trainings
# take turns on all cores (tests/conftest.py heavy_turn). loadgroup keeps the tests of one
# xdist_group on one worker, so a module fixture they share (tests/test_rl.py's reward model) is
# built once.
exec .venv/bin/python -m pytest -n "${TUNELAB_TEST_WORKERS:-2}" --dist loadgroup "$@"
