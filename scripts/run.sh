#!/usr/bin/env bash
# Set up (first time only) and start tunelab; extra arguments go to the `tunelab` command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tunelab "$@"
