#!/usr/bin/env bash
# The test command: set up (scripts/setup.sh), lint (scripts/lint.sh), then every test that needs
# no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/lint.sh
.venv/bin/python -m pytest -m "not gpu" -q -W ignore::DeprecationWarning -W ignore::FutureWarning "$@" tests
