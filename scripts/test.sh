#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False TOKENIZERS_PARALLELISM=false
# Two workers by default (TUNELAB_TEST_WORKERS=0 runs in one process): much of the suite waits on
# subprocess start-up, model loading and Textual, so two share the 2 cores this was sized on;
# worksteal evens out the few long training tests.
exec .venv/bin/python -m pytest -n "${TUNELAB_TEST_WORKERS:-2}" --dist worksteal "$@"
