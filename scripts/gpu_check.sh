#!/usr/bin/env bash
# The GPU check: one call on a lent H100/H200 (no network), under 10 minutes.
#
#   here:   bash scripts/device_wheels.sh          # peers' wheels into .whl/ (git ignores it)
#   there:  bash scripts/gpu_check.sh              # device tool: carry [".whl"], timeout_s 600
#
# Builds segfast against that machine's torch for sm_90, then, each step under its own timeout
# and all of them inside SEGFAST_CHECK_BUDGET seconds (default 540): the tests marked gpu, the op
# tests (tests/ops, metrics, build), compute-sanitizer memcheck and racecheck of every GPU kernel
# on small odd-sized inputs (scripts/cuda_kernels_once.py), and each quick benchmark
# (benchmarks/bench_*.py, found, not listed). Results go to $SEGFAST_RESULTS_DIR (default $OUT,
# else gpu-results/) as at most 6 files: summary.txt, gpu_check.log, tests.log, sanitizer.log,
# tests.xml and bench.tar.gz (every benchmark's CSV and table). The summary table is printed last.
#
# Without a GPU every step still runs where it can: the GPU steps report "no GPU" and are skipped,
# the op tests run on the CPU (Triton interpreted) and the benchmarks on the CPU. Uses the
# machine's python (PYTHON=... to choose), no venv, no downloads.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
results=${SEGFAST_RESULTS_DIR:-${OUT:-gpu-results}}
budget=${SEGFAST_CHECK_BUDGET:-540}
mkdir -p "$results"
work=$(mktemp -d)
mkdir -p "$work/bench"
log="$work/gpu_check.log"
summary="$work/summary.txt"
start=$SECONDS
status=0
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}

say() { echo "$*" | tee -a "$log"; }
row() { printf '%-34s %-9s %7s  %s\n' "$1" "$2" "$3" "$4" >>"$summary"; }
left() { echo $((budget - (SECONDS - start))); }

# step NAME TIMEOUT LOGFILE COMMAND...: runs COMMAND under min(TIMEOUT, what is left of the
# budget), appends its output to LOGFILE and the main log, and records a summary row.
step() {
  local name=$1 limit=$2 out=$3
  shift 3
  local remaining
  remaining=$(left)
  if ((remaining < 15)); then
    say "== $name: skipped, the ${budget}s budget is spent"
    row "$name" skipped - "budget spent"
    return 0
  fi
  ((limit > remaining)) && limit=$remaining
  say "== $name (limit ${limit}s)"
  local t0=$SECONDS rc
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$out" >>"$log"
  rc=${PIPESTATUS[0]}
  local took=$((SECONDS - t0)) state=ok note=""
  if ((rc == 124 || rc == 137)); then
    state=TIMEOUT note="stopped after ${limit}s"
    status=1
  elif ((rc != 0)); then
    state=FAIL note="exit $rc"
    status=1
  fi
  # the last line of pytest's or the script's own report says most
  note="$note${note:+; }$(grep -E ' (passed|failed|error)|all kernels agree|differ from the CPU|ERROR SUMMARY|wrote ' "$out" | tail -n 1 | cut -c1-70)"
  say "== $name: $state in ${took}s"
  row "$name" "$state" "$took" "$note"
}

skip() {  # skip NAME REASON
  say "== $1: skipped ($2)"
  row "$1" skipped - "$2"
}

printf '%-34s %-9s %7s  %s\n' step status seconds note >"$summary"
{
  echo "segfast GPU check, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"
  "$python" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"
  nvcc --version 2>/dev/null | tail -n 1 || echo "nvcc: not found"
} 2>&1 | tee -a "$log"
gpu=$("$python" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)

# Peers the machine lacks, carried as wheels (scripts/device_wheels.sh).
if compgen -G ".whl/*.whl" >/dev/null; then
  site=$(mktemp -d)
  if "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl >>"$log" 2>&1; then
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    say "== wheels: installed $(ls .whl | tr '\n' ' ')"
  else
    say "== wheels: install failed (see the log); tests that need them skip"
  fi
fi
for peer in pycocotools segment_anything cv2; do
  "$python" -c "import $peer" 2>/dev/null || say "== peer $peer is missing: the tests and benchmark rows that compare with it are skipped"
done

step build 300 "$work/build.log" env SEGFAST_CUDA=1 SEGFAST_CUDA_ARCHS="${SEGFAST_CUDA_ARCHS:-90}" \
  "$python" -m pip install -q --no-build-isolation --no-deps -e .
if ! "$python" -c "import segfast, sys; sys.exit(0 if segfast.build_info()['extension'] else 1)" 2>>"$log"; then
  say "BUILD FAILED: segfast._C does not load; nothing else can be checked"
  status=1
else
  "$python" -m segfast doctor 2>&1 | tee -a "$log" >/dev/null
  xdist=()
  "$python" -c "import xdist" 2>/dev/null && xdist=(-n 8)
  if ((gpu)); then
    step "tests marked gpu" 150 "$work/tests.log" "$python" -m pytest -m gpu -q -rfEs -p no:cacheprovider \
      --junitxml="$work/tests.xml" tests
    export PYTORCH_NO_CUDA_MEMORY_CACHING=1  # each allocation its own, so memcheck sees every overrun
    if command -v compute-sanitizer >/dev/null; then
      for tool in memcheck racecheck; do
        step "compute-sanitizer $tool" 120 "$work/sanitizer.log" compute-sanitizer --tool "$tool" \
          --error-exitcode 3 --print-limit 30 "$python" scripts/cuda_kernels_once.py
      done
    else
      skip "compute-sanitizer" "not on the PATH"
    fi
    unset PYTORCH_NO_CUDA_MEMORY_CACHING
  else
    skip "tests marked gpu" "no GPU"
    skip "compute-sanitizer" "no GPU"
  fi
  step "op tests" 180 "$work/tests.log" "$python" -m pytest -m "not gpu" -q -rfE -p no:cacheprovider "${xdist[@]}" \
    tests/ops tests/test_metrics.py tests/test_build.py
  device=$([ "$gpu" = 1 ] && echo cuda || echo cpu)
  # Each benchmark declares its limit (GPU_CHECK_SECONDS = N, default 60); the cheap ones run
  # first, so a spent budget cuts the heaviest.
  for bench in $(for b in benchmarks/bench_*.py; do
                   echo "$(grep -oP '^GPU_CHECK_SECONDS = \K[0-9]+' "$b" || echo 60) $b"
                 done | sort -n | cut -d' ' -f2); do
    name=$(basename "$bench" .py)
    limit=$(grep -oP '^GPU_CHECK_SECONDS = \K[0-9]+' "$bench" || echo 60)
    step "$name --quick ($device)" "$limit" "$work/bench/$name.log" \
      "$python" -m "benchmarks.$name" --device "$device" --quick --out "$work/bench"
  done
fi

# At most 6 files come back: the logs, the test report and one archive of the benchmark outputs.
tar -czf "$results/bench.tar.gz" -C "$work" bench
for f in summary.txt gpu_check.log tests.log sanitizer.log tests.xml; do
  [ -f "$work/$f" ] && cp "$work/$f" "$results/$f"
done
{
  echo
  echo "== summary ($((SECONDS - start))s of ${budget}s; results in $results)"
  cat "$summary"
} | tee -a "$results/gpu_check.log"
exit "$status"
