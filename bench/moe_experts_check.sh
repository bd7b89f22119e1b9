#!/usr/bin/env bash
# The MoE expert path on one GPU, each step under `timeout` with its log in OUT as it goes:
# build; the grouped-GEMM, packed-SwiGLU, MoE and model CUDA tests; the experts benchmark (kernels_bench --only experts, JSON); then the A0.3B-2B Lightning 1/4
# hybrid at 8 x 4096 tokens for 4 steps with the grouped call and, while time is left, with
# LINEA_GROUPED_GEMM=loop. Run from a directory holding data/fortunes.tokens (the config's path).
#   bench/moe_experts_check.sh OUT [BUILD_DIR] [SECONDS]
set -u
OUT=$1
B=${2:-build-gpu}
BUDGET=${3:-230}
SRC=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s, at ${SECONDS}s)"
  timeout --kill-after=5 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc $rc"
  tail -n 25 "$OUT/$name.log"
  return $rc
}
step cmake 60 cmake -S "$SRC" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLINEA_CUDA=ON || exit 1
step build 150 cmake --build "$B" -j "$(nproc)" --target linea linea_cuda_tests kernels_bench \
  || exit 1
step cuda_tests 90 "$B/tests/linea_cuda_tests" \
  --gtest_filter='GroupedGemmCuda*:SwigluPackedCuda*:MoeCuda*:LinearCuda*:GemmCuda*:ModelCuda*'
step bench 60 "$B/bench/kernels_bench" --only experts --json "$OUT/experts_bench.json"
train() {  # train NAME [ENV=VALUE...]
  local name=$1
  shift
  step "$name" 75 env "$@" "$B/linea" train --config "$SRC/configs/zoo/a0.3b-2b_lightning_hybrid.pbtxt" \
    --set train.steps=4 --set schedule.warmup_steps=1 --set train.micro_batch_size=8 \
    --set train.grad_accum_steps=1 --set checkpoint.every_steps=0 \
    --set logging.every_steps=1 --set train.output_dir="/tmp/linea_run_$name"
  cp "/tmp/linea_run_$name/metrics.jsonl" "$OUT/$name.metrics.jsonl" 2>/dev/null
}
train train_grouped LINEA_GROUPED_GEMM=grouped
if [ "$SECONDS" -lt $((BUDGET - 75)) ]; then train train_loop LINEA_GROUPED_GEMM=loop; fi
grep -h "tok/s" "$OUT"/train_*.log
