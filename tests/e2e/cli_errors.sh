#!/usr/bin/env bash
# Mistakes a user makes get one clear error naming the field or file, and a non-zero exit.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh" "$@"
"$LINEA" --version | grep -q '^linea ' || fail "--version"
"$LINEA" validate-config | grep -q 'hidden_size: 64' || fail "embedded default does not resolve"
[ "$("$LINEA" info mixers | wc -l)" -ge 18 ] || fail "info mixers lists too few kinds"

expect_error "$LINEA" validate-config --set model.hidden_size=0; contains "$LAST_ERROR" "model.hidden_size"
expect_error "$LINEA" validate-config --set model.mixer.num_heads=5; contains "$LAST_ERROR" "num_heads"
expect_error "$LINEA" validate-config --set model.hiden_size=3; contains "$LAST_ERROR" "hiden_size"
expect_error "$LINEA" validate-config --set model.mixer.kind=NOPE; contains "$LAST_ERROR" "NOPE"
expect_error "$LINEA" validate-config --set data.seq_len=100; contains "$LAST_ERROR" "chunk_size"
expect_error "$LINEA" validate-config --set parallel.dp=3 --world-size 2; contains "$LAST_ERROR" "parallel.dp"
expect_error "$LINEA" validate-config --set optimizer.lr=-0.001; contains "$LAST_ERROR" "optimizer.lr"
expect_error "$LINEA" train --set optimizer.lr=-0.001 --set train.output_dir="$WORK/neg"
contains "$LAST_ERROR" "optimizer.lr"
[ ! -e "$WORK/neg/metrics.jsonl" ] || fail "training started despite a bad config"
expect_error "$LINEA" validate-config --set train.device=tpu; contains "$LAST_ERROR" "train.device"
# Without a GPU (CI), or with the tiny CPU model on a GPU (heads of 16), cuda is refused up front.
expect_error "$LINEA" train --set train.device=cuda --set train.output_dir="$WORK/gpu"
contains "$LAST_ERROR" "train.device = cuda"
[ ! -e "$WORK/gpu/metrics.jsonl" ] || fail "training started on a device that cannot run it"
printf 'model { hidden_size: 64\n  bogus: 1 }\n' >"$WORK/bad.pbtxt"
expect_error "$LINEA" validate-config --config "$WORK/bad.pbtxt"; contains "$LAST_ERROR" "bad.pbtxt"
contains "$LAST_ERROR" "bogus"
expect_error "$LINEA" validate-config --config "$WORK/missing.pbtxt"; contains "$LAST_ERROR" "missing.pbtxt"

# Configs merge in order, --set wins over files.
printf 'model { hidden_size: 32 }\n' >"$WORK/a.pbtxt"
printf 'model { num_layers: 3 layer_pattern: "LLL" }\n' >"$WORK/b.pbtxt"
out=$("$LINEA" validate-config -c "$WORK/a.pbtxt" -c "$WORK/b.pbtxt" --set model.hidden_size=48)
contains "$out" "hidden_size: 48"; contains "$out" "num_layers: 3"

# Missing data: the error names the file and says how to make it.
expect_error "$LINEA" train --set data.path="$WORK/none.tokens" --set train.output_dir="$WORK/r"
contains "$LAST_ERROR" "none.tokens"; contains "$LAST_ERROR" "hint:"
# A corrupted token shard is refused with its name.
printf 'NOTATOKENFILE....................................' >"$WORK/junk.tokens"
expect_error "$LINEA" train --set data.path="$WORK/junk.tokens" --set train.output_dir="$WORK/r"
contains "$LAST_ERROR" "junk.tokens"
expect_error "$LINEA" prepare-data --output "$WORK/x.tokens" "$WORK/nope.txt"
contains "$LAST_ERROR" "nope.txt"
echo "all CLI error checks passed"
