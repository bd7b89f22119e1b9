#!/usr/bin/env bash
# The one GPU-machine check: configure (Release, LINEA_CUDA=ON, ninja when present), build with
# every core, run the CUDA tests (ctest -L cuda), then the kernel benchmarks. Every step runs
# under `timeout` and writes its log into OUT_DIR as it goes (no buffering pipes), so whatever
# finished is there even when a later step is killed.
#
#   bench/gpu_check.sh OUT_DIR
# Environment: LINEA_GPU_BUILD_DIR (default build-gpu); LINEA_SANITIZE=1 adds a
# compute-sanitizer memcheck pass over the CUDA tests; LINEA_BLAS_TARBALL, a tar of lib/ and
# include/ holding OpenBLAS, used only where the machine has none.
set -uo pipefail
OUT=${1:?usage: bench/gpu_check.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0
BUILD=${LINEA_GPU_BUILD_DIR:-build-gpu}
JOBS=$(nproc 2>/dev/null || echo 4)
SUMMARY="$OUT/summary.txt"

log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" >>"$SUMMARY"; echo "[gpu_check] $*"; }
# step NAME SECONDS CMD...: runs CMD under timeout with its output in OUT/NAME.log.
step() {
  local name=$1 limit=$2
  shift 2
  log "start $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  log "end $name rc=$rc after $((SECONDS - t0))s"
  return $rc
}

{
  echo "== date"; date -u
  echo "== nvidia-smi"; nvidia-smi
  echo "== nvcc"; nvcc --version
  echo "== cmake"; cmake --version
  echo "== ninja"; ninja --version
  echo "== cores"; nproc
  echo "== openblas"; ldconfig -p | grep -i openblas
  ls /usr/include/cblas.h /usr/include/*/cblas.h /usr/include/openblas/cblas.h 2>/dev/null
} >"$OUT/env.txt" 2>&1

CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Release -DLINEA_CUDA=ON)
command -v ninja >/dev/null && CMAKE_ARGS+=(-G Ninja)
if ! ldconfig -p | grep -q libopenblas && [ -n "${LINEA_BLAS_TARBALL:-}" ]; then
  log "no system OpenBLAS: using $LINEA_BLAS_TARBALL"
  mkdir -p /tmp/linea_blas && tar xf "$LINEA_BLAS_TARBALL" -C /tmp/linea_blas
  export LD_LIBRARY_PATH=/tmp/linea_blas/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export LIBRARY_PATH=/tmp/linea_blas/lib${LIBRARY_PATH:+:$LIBRARY_PATH}
  CMAKE_ARGS+=(-DCMAKE_LIBRARY_PATH=/tmp/linea_blas/lib -DCMAKE_INCLUDE_PATH=/tmp/linea_blas/include)
fi

step configure 300 cmake -S . -B "$BUILD" "${CMAKE_ARGS[@]}" || exit 1
step build 900 cmake --build "$BUILD" -j "$JOBS" --target linea_cuda_tests linea_cuda_mpi_tests kernels_bench linear_attention_lab || exit 1
(cd "$BUILD" && step ctest_cuda 600 ctest -L cuda --output-on-failure -j 4 --timeout 300)
ctest_rc=$?
if [ "${LINEA_SANITIZE:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  # Out-of-bounds and misaligned accesses in every CUDA test (a few seconds on an H200).
  step sanitizer 400 compute-sanitizer --tool memcheck --error-exitcode 3 \
    "$BUILD/tests/linea_cuda_tests"
  log "sanitizer rc=$?"
fi
step kernels_bench 600 "$BUILD/bench/kernels_bench" --json "$OUT/kernels_bench.json"
bench_rc=$?
# The chunk scan's kernel lab: validate against its f64 reference, then time (docs/performance.md).
step lab_linear_attention 400 "$BUILD/bench/linear_attention_lab" "$OUT/lab_linear_attention.json"
lab_rc=$?
bench_rc=$((bench_rc != 0 || lab_rc != 0))
log "done: ctest_cuda rc=$ctest_rc, kernels_bench rc=$bench_rc"
tail -n 5 "$OUT/ctest_cuda.log"
cat "$OUT/kernels_bench.log"
cat "$OUT/lab_linear_attention.log"
exit $((ctest_rc != 0 || bench_rc != 0))
