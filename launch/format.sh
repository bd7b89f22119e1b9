#!/usr/bin/env bash
# Applies .clang-format to every C++/CUDA source of the project, or with --check only reports files
# that differ (non-zero exit). Used by the `format` ctest test.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -- '*.h' '*.cpp' '*.cu' '*.cuh' 2>/dev/null ||
  find core kernels parallel launch tests bench -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh')
if [ "${1:-}" = --check ]; then
  # One process for all files; only on failure look file by file to name them.
  if clang-format --dry-run -Werror "${files[@]}" >/dev/null 2>&1; then
    echo "all ${#files[@]} files formatted"
    exit 0
  fi
  for f in "${files[@]}"; do
    clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || echo "not formatted: $f (run launch/format.sh)"
  done
  exit 1
fi
clang-format -i "${files[@]}"
