#!/usr/bin/env bash
# The main job on its built-in default: set up, then train a tiny LLaFS on generated pseudo
# pairs (a few minutes on a CPU) and write demo-out/llafs_predictions.png and llafs_curves.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m segfast demo --out demo-out "$@"
