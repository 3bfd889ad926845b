#!/usr/bin/env bash
# The main job on its built-in default: set up, rasterize polygons to demo-out/rasterize_demo.png
# and print the quick rasterization benchmark (demo-out/rasterize_*.csv).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m segfast demo --out demo-out "$@"
