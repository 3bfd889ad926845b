#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: .venv with the pinned stack (requirements/ci.txt) and
# segfast built in place. SEGFAST_CUDA=auto|1|0 decides whether the CUDA kernels are compiled.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements/ci.txt
echo "segfast: building the extension (a minute or so)..." >&2
.venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
