#!/usr/bin/env bash
# The one GPU-machine check: configure (Release, LINEA_CUDA=ON, ninja when present), build with
# every core, run the CUDA tests (ctest -L cuda), then the kernel benchmarks. Every step runs
# under `timeout` and writes its log into OUT_DIR as it goes (no buffering pipes), so whatever
# finished is there even when a later step is killed.
#
#   bench/gpu_check.sh OUT_DIR
# Environment: LINEA_GPU_BUILD_DIR (default build-gpu); LINEA_GPU_STEPS, a space-separated subset
# of "tests kernels lab train" (default "tests kernels lab"; "train" runs bench/train_bench.sh,
# the A0.3B-2B training-step matrix, into OUT_DIR/train); LINEA_SANITIZE=1 adds a
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
STEPS=" ${LINEA_GPU_STEPS:-tests kernels lab} "
wants() { [[ "$STEPS" == *" $1 "* ]]; }
step build 900 cmake --build "$BUILD" -j "$JOBS" --target linea linea_cuda_tests linea_cuda_mpi_tests kernels_bench linear_attention_lab || exit 1
ctest_rc=0
if wants tests; then
  # One test at a time: the GPU equivalence test runs two ranks on it already.
  (cd "$BUILD" && step ctest_cuda 900 ctest -L cuda --output-on-failure --timeout 600)
  ctest_rc=$?
fi
if [ "${LINEA_SANITIZE:-0}" = 1 ] && command -v compute-sanitizer >/dev/null; then
  # Out-of-bounds and misaligned accesses in every CUDA test (a few seconds on an H200).
  step sanitizer 400 compute-sanitizer --tool memcheck --error-exitcode 3 \
    "$BUILD/tests/linea_cuda_tests"
  log "sanitizer rc=$?"
fi
bench_rc=0
if wants kernels; then
  step kernels_bench 600 "$BUILD/bench/kernels_bench" --json "$OUT/kernels_bench.json" || bench_rc=1
fi
# The chunk scan's kernel lab: validate against its f64 reference, then time (docs/performance.md).
if wants lab; then
  step lab_linear_attention 400 "$BUILD/bench/linear_attention_lab" \
    "$OUT/lab_linear_attention.json" || bench_rc=1
fi
if wants train; then
  LINEA_BIN="$BUILD/linea" step train_bench 1800 bench/train_bench.sh "$OUT/train" || bench_rc=1
fi
log "done: ctest_cuda rc=$ctest_rc, benchmarks rc=$bench_rc"
for f in ctest_cuda kernels_bench lab_linear_attention train_bench; do
  [ -f "$OUT/$f.log" ] && tail -n 40 "$OUT/$f.log"
done
exit $((ctest_rc != 0 || bench_rc != 0))
