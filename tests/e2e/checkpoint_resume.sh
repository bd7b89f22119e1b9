#!/usr/bin/env bash
# Stop, resume and move checkpoints through the CLI (docs/checkpoints.md):
#  1. configs/tiny.pbtxt: 20 steps in one run vs 10 (train.stop_after_steps) + 10 resumed from the
#     output dir: the losses of steps 11-20 are bitwise identical (metrics.jsonl prints doubles in
#     the shortest form that round-trips, so equal text is equal bits); periodic validation and
#     `linea eval` of the step-20 checkpoint agree exactly.
#  2. configs/moe_tiny.pbtxt with EP=2 over 2 ranks: the same, with model/optimizer shards.
#  3. DP=2 stopped at step 10, resumed as DP=1 with twice the micro-batch: steps 11-20 match the
#     DP=2 run within 1e-5 (the reduction order differs); other layouts are refused naming the field.
#  4. model.safetensors follows the safetensors rules (python3 parses it; skipped without python3).
#  5. One flipped byte makes resume refuse, naming the file.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh" "$@"
data=$(corpus)
MPI="$SRC/launch/mpirun.sh"
common=(--set data.path="$data" --set data.seq_len=64 --set train.steps=20
  --set schedule.warmup_steps=5 --set logging.every_steps=1 --set checkpoint.every_steps=10
  --set logging.level=warn)
same_losses() {  # bitwise: identical text
  local a b
  a=$(losses_after "$1" 10); b=$(losses_after "$2" 10)
  [ "$(wc -l <<<"$a")" -eq 10 ] || fail "expected 10 losses after step 10 in $1, got: $a"
  [ "$a" = "$b" ] || fail "losses of steps 11-20 differ ($3):"$'\n'"$(paste <(echo "$a") <(echo "$b"))"
  echo "$3: steps 11-20 bitwise identical"
}
flip_byte() {  # flip_byte FILE OFFSET: xor the byte with 1
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((b ^ 1)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# ---- 1. dense tiny config, one rank ----------------------------------------------------------
tiny=(--config "$SRC/configs/tiny.pbtxt" "${common[@]}" --set train.micro_batch_size=4
  --set data.valid_fraction=0.05 --set eval.every_steps=5 --set eval.batches=2)
"$LINEA" train "${tiny[@]}" --set train.output_dir="$WORK/whole"
"$LINEA" train "${tiny[@]}" --set train.output_dir="$WORK/split" --set train.stop_after_steps=10
[ -f "$WORK/split/checkpoints/step-10/COMPLETE" ] || fail "no committed checkpoint at step 10"
[ ! -d "$WORK/split/checkpoints/step-20" ] || fail "the stopped run went past step 10"
# As if the stopped run had logged a step past its checkpoint before dying: resume drops it.
echo '{"loss":9.0,"step":15}' >>"$WORK/split/metrics.jsonl"
"$LINEA" train "${tiny[@]}" --set train.output_dir="$WORK/split"  # resumes by itself
same_losses "$WORK/whole/metrics.jsonl" "$WORK/split/metrics.jsonl" "tiny, 10 + 10"
val20=$(grep '"val_loss"' "$WORK/whole/metrics.jsonl" | grep '"step":20' |
  sed -E 's/.*"val_loss":([^,}]+).*/\1/')
[ -n "$val20" ] || fail "no val_loss at step 20 in metrics.jsonl"
out=$("$LINEA" eval --checkpoint "$WORK/whole/checkpoints/step-20" 2>/dev/null)
echo "eval: $out"
contains "$out" "\"val_loss\":$val20"
contains "$out" '"val_ppl"'
contains "$out" '"step":20'

# ---- 4. the file format ------------------------------------------------------------------------
if command -v python3 >/dev/null; then
  python3 "$SRC/tests/e2e/lib/safetensors_check.py" "$WORK/whole/checkpoints/step-20/model.safetensors" \
    embeddings.weight layers.0.mixer.q_proj.weight layers.1.mlp.down_proj.weight norm.weight
  python3 "$SRC/tests/e2e/lib/safetensors_check.py" \
    "$WORK/whole/checkpoints/step-20/optimizer.safetensors" embeddings.weight.exp_avg \
    embeddings.weight.exp_avg_sq
else
  echo "SKIP: no python3, the safetensors header check did not run"
fi

# ---- 5. one flipped byte ----------------------------------------------------------------------
cp -r "$WORK/split/checkpoints/step-10" "$WORK/damaged"
size=$(stat -c %s "$WORK/damaged/model.safetensors")
flip_byte "$WORK/damaged/model.safetensors" $((size / 2))
expect_error "$LINEA" train "${tiny[@]}" --set train.output_dir="$WORK/again" \
  --resume "$WORK/damaged" >/dev/null
contains "$LAST_ERROR" "$WORK/damaged/model.safetensors: checksum mismatch"

# ---- 2. MoE with EP=2 over 2 ranks ------------------------------------------------------------
moe=(--config "$SRC/configs/moe_tiny.pbtxt" "${common[@]}" --set data.seq_len=32
  --set train.micro_batch_size=1 --set parallel.ep=2)
"$MPI" -np 2 "$LINEA" train "${moe[@]}" --set train.output_dir="$WORK/moe_whole"
"$MPI" -np 2 "$LINEA" train "${moe[@]}" --set train.output_dir="$WORK/moe_split" \
  --set train.stop_after_steps=10
ck="$WORK/moe_split/checkpoints/step-10"
for f in model-00001-of-00002.safetensors model-00002-of-00002.safetensors \
  optimizer-00001-of-00002.safetensors optimizer-00002-of-00002.safetensors \
  model.safetensors.index.json; do
  [ -f "$ck/$f" ] || fail "EP=2 checkpoint lacks $f"
done
grep -q '"layers.0.mlp.experts.3.down_proj.weight": "model-00002-of-00002.safetensors"' \
  "$ck/model.safetensors.index.json" || fail "the index does not map expert 3 to shard 2"
"$MPI" -np 2 "$LINEA" train "${moe[@]}" --set train.output_dir="$WORK/moe_split"
same_losses "$WORK/moe_whole/metrics.jsonl" "$WORK/moe_split/metrics.jsonl" "MoE EP=2, 10 + 10"
expect_error "$LINEA" train "${moe[@]}" --set parallel.ep=1 --set train.micro_batch_size=2 \
  --set train.output_dir="$WORK/moe_ep1" --resume "$ck" >/dev/null
contains "$LAST_ERROR" "parallel.ep = 1, but checkpoint"

# ---- 3. DP=2 -> DP=1 ---------------------------------------------------------------------------
dp=(--config "$SRC/configs/tiny.pbtxt" "${common[@]}")
"$MPI" -np 2 "$LINEA" train "${dp[@]}" --set train.micro_batch_size=2 \
  --set train.output_dir="$WORK/dp2"
"$MPI" -np 2 "$LINEA" train "${dp[@]}" --set train.micro_batch_size=2 \
  --set train.output_dir="$WORK/dp_move" --set train.stop_after_steps=10
expect_error "$LINEA" train "${dp[@]}" --set train.micro_batch_size=2 \
  --set train.output_dir="$WORK/dp_move" >/dev/null
contains "$LAST_ERROR" "train.micro_batch_size"
"$LINEA" train "${dp[@]}" --set train.micro_batch_size=4 --set train.output_dir="$WORK/dp_move"
paste <(losses_after "$WORK/dp2/metrics.jsonl" 10) <(losses_after "$WORK/dp_move/metrics.jsonl" 10) |
  awk 'BEGIN { n = 0; worst = 0 }
       { n++; d = $2 - $4; if (d < 0) d = -d; if (d > worst) worst = d; if ($1 != $3) bad = 1 }
       END { printf "DP=2 -> DP=1: steps 11-20, largest loss difference %.3g (tolerance 1e-5)\n", worst;
             exit !(n == 10 && !bad && worst <= 1e-5) }' || fail "DP=2 -> DP=1 losses differ beyond 1e-5"
