#!/usr/bin/env bash
# Applies .clang-format to every C++/CUDA source of the project, or with --check only reports files
# that differ (non-zero exit). Used by the `format` ctest test.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -- '*.h' '*.cpp' '*.cu' '*.cuh' 2>/dev/null ||
  find core kernels parallel launch tests bench -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh')
if [ "${1:-}" = --check ]; then
  bad=0
  for f in "${files[@]}"; do
    if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then echo "not formatted: $f"; bad=1; fi
  done
  [ $bad = 0 ] && echo "all ${#files[@]} files formatted"
  exit $bad
fi
clang-format -i "${files[@]}"
