#!/usr/bin/env bash
# Checkpoints of a model trained on a GPU (docs/checkpoints.md): configs/gpu_hybrid_moe.pbtxt
# (Lightning + softmax attention, MoE, bf16 matmuls) for 10 steps in one run vs 5 steps
# (train.stop_after_steps) + 5 resumed from the output dir. The parameters and AdamW moments are
# copied from the GPU into the step-5 checkpoint and back onto the GPU on resume; steps 6-10 must
# give the same losses. The GPU kernels are deterministic (no atomics in any reduction; cuBLAS
# with a fixed workspace), so they are expected bitwise identical; the test allows 1e-6 relative
# and prints whether they were identical. Then EP = 2 on two ranks (sharded expert files; both
# ranks share the one GPU where there is only one) resumes the same way.
#   tests/cuda_multirank/checkpoint_resume.sh LINEA SRC
# Exit 77 (ctest: skipped) without a GPU.
set -euo pipefail
source "$(dirname "$0")/../e2e/lib/common.sh" "$@"
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no CUDA device: nvidia-smi lists none; skipped"
  exit 77
fi
export NCCL_NVLS_ENABLE=0
data=$(corpus)
common=(--config "$SRC/configs/gpu_hybrid_moe.pbtxt" --set train.steps=10 --set logging.every_steps=1
  --set data.path="$data" --set schedule.warmup_steps=2 --set checkpoint.every_steps=5
  --set logging.level=info)
compare() {  # compare WHOLE SPLIT NAME
  local a b
  a=$(losses_after "$1" 5); b=$(losses_after "$2" 5)
  [ "$(wc -l <<<"$a")" -eq 5 ] || fail "$3: expected 5 losses after step 5 in $1, got: $a"
  if [ "$a" = "$b" ]; then
    echo "$3: steps 6-10 bitwise identical"
    return
  fi
  paste <(echo "$a") <(echo "$b") | awk -v name="$3" '{
      d = $2 - $4; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2);
      if (r > worst) worst = r }
    END { printf "%s: steps 6-10 differ by at most %.3g relative\n", name, worst;
          exit worst > 1e-6 }' || fail "$3: resumed losses differ from the whole run"
}
run() {  # run NP NAME ARGS...
  local np=$1 name=$2
  shift 2
  "$SRC/launch/mpirun.sh" -np "$np" "$LINEA" train "${common[@]}" --set train.output_dir="$WORK/$name" \
    "$@" >>"$WORK/$name.log" 2>&1 || { tail -20 "$WORK/$name.log"; fail "$name did not train"; }
}

run 1 whole --set train.micro_batch_size=4
run 1 split --set train.micro_batch_size=4 --set train.stop_after_steps=5
[ -f "$WORK/split/checkpoints/step-5/COMPLETE" ] || fail "no committed checkpoint at step 5"
[ ! -d "$WORK/split/checkpoints/step-10" ] || fail "the stopped run went past step 5"
run 1 split --set train.micro_batch_size=4
grep -q "checkpoint: resumed from .*step-5" "$WORK/split.log" || fail "the second run did not resume"
compare "$WORK/whole/metrics.jsonl" "$WORK/split/metrics.jsonl" "one GPU, 5 + 5"

run 2 ep_whole --set train.micro_batch_size=2 --set parallel.ep=2
run 2 ep_split --set train.micro_batch_size=2 --set parallel.ep=2 --set train.stop_after_steps=5
[ -f "$WORK/ep_split/checkpoints/step-5/COMPLETE" ] || fail "no committed EP checkpoint at step 5"
run 2 ep_split --set train.micro_batch_size=2 --set parallel.ep=2
compare "$WORK/ep_whole/metrics.jsonl" "$WORK/ep_split/metrics.jsonl" "EP = 2, 5 + 5"
echo "PASS"
