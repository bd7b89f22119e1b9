#!/usr/bin/env bash
# The test command: sets up and builds (launch/setup.sh, idempotent), then runs every ctest test
# that needs no GPU (unit, multi-rank over mpirun, end-to-end). Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
cd "${LINEA_BUILD_DIR:-build}"
ctest --output-on-failure --label-exclude cuda -j "$(nproc 2>/dev/null || echo 2)" "$@"
