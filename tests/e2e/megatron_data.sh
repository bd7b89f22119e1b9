#!/usr/bin/env bash
# Megatron indexed datasets end to end: `linea prepare-data --format megatron` writes the fortunes
# corpus as PREFIX.bin/.idx; the tiny config trains on it with the loss falling, and on a blend of
# two datasets; a truncated .bin and a bad .idx magic each fail naming the file.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh" "$@"
mega="$WORK/fortunes"
"$LINEA" prepare-data --format megatron --separator % --output "$mega" "${FORTUNE_TEXTS[@]}"
[ -f "$mega.bin" ] && [ -f "$mega.idx" ] || fail "prepare-data did not write $mega.bin/.idx"
[ "$(head -c 7 "$mega.idx")" = MMIDIDX ] || fail "$mega.idx lacks the Megatron magic"

"$LINEA" train --set data.source=MEGATRON --set data.path="$mega" --set train.steps=30 \
  --set schedule.warmup_steps=5 --set train.output_dir="$WORK/run" --set logging.every_steps=5 \
  2>&1 | tee "$WORK/train.log"
grep -q "data: $mega (data.path): u16 ids" "$WORK/train.log" || fail "the dataset is not logged"
m="$WORK/run/metrics.jsonl"
first=$(first_loss "$m"); last=$(last_loss "$m")
echo "loss $first -> $last"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 1.0) }' || fail "loss did not fall: $first -> $last"

# A blend over 2 DP ranks (set in a config file, as repeated fields are): the corpus and its
# literature file alone, weighted 1:3.
"$LINEA" prepare-data --format megatron --separator % --output "$WORK/literature" \
  "${FORTUNE_TEXTS[1]}" >/dev/null
printf 'data { source: MEGATRON blend { weight: 1 prefix: "%s" } blend { weight: 3 prefix: "%s" } }\n' \
  "$mega" "$WORK/literature" >"$WORK/blend.pbtxt"
"$SRC/launch/mpirun.sh" -np 2 "$LINEA" train --config "$SRC/configs/tiny.pbtxt" \
  --config "$WORK/blend.pbtxt" --set train.steps=3 --set schedule.warmup_steps=1 \
  --set train.output_dir="$WORK/blend" --set logging.every_steps=1 2>&1 | tee "$WORK/blend.log"
grep -q "(data.blend\[1\])" "$WORK/blend.log" || fail "the blend's second dataset is not logged"
[ "$(wc -l <"$WORK/blend/metrics.jsonl")" -eq 3 ] || fail "the blend did not train 3 steps"

# A truncated .bin names the .bin and both sizes.
cp "$mega.idx" "$WORK/cut.idx"
head -c $(($(stat -c %s "$mega.bin") - 2)) "$mega.bin" >"$WORK/cut.bin"
expect_error "$LINEA" train --set data.source=MEGATRON --set data.path="$WORK/cut" \
  --set train.output_dir="$WORK/r"
contains "$LAST_ERROR" "$WORK/cut.bin"; contains "$LAST_ERROR" "truncated"
contains "$LAST_ERROR" "hint:"
# A wrong magic names the .idx.
cp "$mega.bin" "$WORK/bad.bin"
{ printf 'X'; tail -c +2 "$mega.idx"; } >"$WORK/bad.idx"
expect_error "$LINEA" train --set data.source=MEGATRON --set data.path="$WORK/bad" \
  --set train.output_dir="$WORK/r"
contains "$LAST_ERROR" "$WORK/bad.idx"; contains "$LAST_ERROR" "magic"
[ ! -s "$WORK/r/metrics.jsonl" ] || fail "training started on corrupted data"
# The prefix, not a file name: a missing dataset says so.
expect_error "$LINEA" train --set data.source=MEGATRON --set data.path="$mega.bin" \
  --set train.output_dir="$WORK/r"
contains "$LAST_ERROR" "$mega.bin.idx"; contains "$LAST_ERROR" "without .bin/.idx"
echo "Megatron data: prepared, trained, blended, corruption refused"
