#!/usr/bin/env bash
# The synthetic MQAR dataset trains on one rank with gradient accumulation; the loss falls.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh" "$@"
"$LINEA" train --set data.source=MQAR --set data.seq_len=64 --set model.vocab_size=64 \
  --set data.mqar.num_kv_pairs=4 --set data.mqar.num_queries=4 --set train.steps=40 \
  --set train.grad_accum_steps=2 --set train.output_dir="$WORK/run" --set logging.every_steps=5
m="$WORK/run/metrics.jsonl"
first=$(first_loss "$m"); last=$(last_loss "$m")
echo "loss $first -> $last"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 0.5) }' || fail "loss did not fall: $first -> $last"
