#!/usr/bin/env bash
# `linea train --set parallel.sp=2` on the tiny configs: the embedded default (basic linear
# attention) over SP = 2, and a Gated DeltaNet 1/4 hybrid (LASP-2 with a halo, LASP-2H) over
# DP = 2 x SP = 2; the loss falls and the metrics report the all-gather bytes of LASP-2.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh" "$@"
data=$(corpus)
"$SRC/launch/mpirun.sh" -np 2 "$LINEA" train --set parallel.sp=2 --set train.steps=40 \
  --set data.path="$data" --set train.output_dir="$WORK/sp2" --set logging.every_steps=5 \
  --set schedule.warmup_steps=5
m="$WORK/sp2/metrics.jsonl"
grep -q '"all_gather"' "$m" || fail "no all-gather bytes reported under SP"
first=$(first_loss "$m"); last=$(last_loss "$m")
echo "sp=2: loss $first -> $last"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 1.0) }' || fail "loss did not fall: $first -> $last"

"$SRC/launch/mpirun.sh" -np 4 "$LINEA" train --config "$SRC/configs/mixers/gated_deltanet_hybrid.pbtxt" \
  --set parallel.sp=2 --set train.steps=30 --set data.path="$data" \
  --set train.output_dir="$WORK/dp2sp2" --set logging.every_steps=5 --set schedule.warmup_steps=5
m="$WORK/dp2sp2/metrics.jsonl"
first=$(first_loss "$m"); last=$(last_loss "$m")
echo "dp=2 x sp=2 hybrid: loss $first -> $last"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 1.0) }' || fail "loss did not fall: $first -> $last"
