#!/usr/bin/env bash
# One call on a GPU machine (under 10 minutes): build against that machine's torch, run the GPU
# tests and the CPU tests, run the quick GPU benchmarks. Results go to $SEGFAST_RESULTS_DIR
# (default: $OUT when set, else gpu-results/). Uses the machine's python and packages: no venv,
# no downloads.
set -uo pipefail
cd "$(dirname "$0")/.."
results=${SEGFAST_RESULTS_DIR:-${OUT:-gpu-results}}
mkdir -p "$results"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0
{
  echo "== build ($(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  SEGFAST_CUDA=1 SEGFAST_CUDA_ARCHS=${SEGFAST_CUDA_ARCHS:-90} \
    "$python" -m pip install -q --no-build-isolation --no-deps -e . \
    || SEGFAST_CUDA=1 SEGFAST_CUDA_ARCHS=${SEGFAST_CUDA_ARCHS:-90} "$python" setup.py -q build_ext --inplace \
    || { echo "BUILD FAILED"; exit 1; }
  "$python" -m segfast doctor
  echo "== GPU tests"
  "$python" -m pytest -m gpu -v -W ignore::DeprecationWarning tests || status=1
  echo "== CPU tests"
  "$python" -m pytest -m "not gpu" -q -W ignore::DeprecationWarning tests || status=1
  echo "== benchmarks"
  "$python" -m benchmarks.bench_rasterize --device cuda --quick --out "$results" || status=1
  "$python" -m benchmarks.bench_overlap --device cuda --quick --out "$results" || status=1
  "$python" -m benchmarks.bench_pooling --device cuda --quick --out "$results" || status=1
  "$python" -m benchmarks.bench_ohem --device cuda --quick --out "$results" || status=1
  "$python" -m benchmarks.bench_attention --device cuda --quick --out "$results" || status=1
  "$python" -m benchmarks.bench_train --device cuda --quick --out "$results" || status=1
  "$python" -m benchmarks.bench_proposals --device cuda --quick --out "$results" || status=1
  echo "== done (status $status)"
  exit "$status"
} 2>&1 | tee "$results/gpu_check.log"
exit "${PIPESTATUS[0]}"
