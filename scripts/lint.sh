#!/usr/bin/env bash
# Lint and format checks (ruff for Python, clang-format for csrc/); the versions pinned in
# requirements/ci.txt. `bash scripts/lint.sh --fix` rewrites instead of checking.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${VENV_BIN:-.venv/bin}
sources=$(git ls-files 'csrc/*.cpp' 'csrc/*.cu' 'csrc/*.h' 2>/dev/null || find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h')
if [ "${1:-}" = "--fix" ]; then
  "$bin/ruff" check --fix .
  "$bin/ruff" format .
  "$bin/clang-format" -i $sources
  exit 0
fi
"$bin/ruff" check .
"$bin/ruff" format --check .
"$bin/clang-format" --dry-run --Werror $sources
echo "lint: ruff and clang-format clean"
