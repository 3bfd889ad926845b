#!/usr/bin/env bash
# Run here, where pip reaches PyPI: downloads the Python 3.12 x86-64 wheels that the GPU check
# needs and the GPU machine lacks (it has no network) into .whl/, which git ignores. The device
# tool carries .whl (name it in `carry`); scripts/gpu_check.sh installs what it finds there and
# skips, with a printed reason, the peers it cannot have.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
# Peers of the op tests and benchmarks. Versions as in requirements/ci.txt; segment-anything is
# pure Python, pycocotools needs numpy (the GPU machine has numpy 2.5).
wheels=(pycocotools==2.0.11 segment-anything==1.0)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$p")
done
mkdir -p .whl
rm -f .whl/*.whl
"$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d .whl "${wheels[@]}"
ls -l .whl
du -sh .whl
