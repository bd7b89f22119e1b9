#!/usr/bin/env bash
# Expert parallelism end to end: the tiny MoE hybrid (configs/moe_tiny.pbtxt) trained with its
# experts spread over the ranks, as EP = 2 on 2 ranks and as DP = 2 x SP = 2 with EP = 4 on 4
# ranks; the loss falls, the metrics report the all-to-all bytes of the token exchange, and the
# log states the EP layout.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh" "$@"
data=$(corpus)
run() {  # run NAME NP SETTINGS...
  local name=$1 np=$2
  shift 2
  "$SRC/launch/mpirun.sh" -np "$np" "$LINEA" train --config "$SRC/configs/moe_tiny.pbtxt" \
    --set train.steps=30 --set data.path="$data" --set train.output_dir="$WORK/$name" \
    --set logging.every_steps=5 --set schedule.warmup_steps=5 "$@"
  local m="$WORK/$name/metrics.jsonl"
  grep -q '"all_to_all"' "$m" || fail "$name: no all-to-all bytes reported under EP"
  grep -q "ep $ep_expect" "$WORK/$name/logs/rank0.log" || fail "$name: the log does not state ep $ep_expect"
  local first last
  first=$(first_loss "$m"); last=$(last_loss "$m")
  echo "$name: loss $first -> $last"
  awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 1.0) }' || fail "$name: loss did not fall: $first -> $last"
}
ep_expect=2 run ep2 2 --set parallel.ep=2
ep_expect=4 run dp2sp2ep4 4 --set parallel.sp=2 --set parallel.ep=4
