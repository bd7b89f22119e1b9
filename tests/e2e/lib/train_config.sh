#!/usr/bin/env bash
# Trains one config briefly on the byte corpus and checks that the loss falls by at least 1 nat.
# Usage: train_config.sh LINEA SRC CONFIG [STEPS]  (registered once per config by tests/CMakeLists.txt)
set -euo pipefail
source "$(dirname "$0")/common.sh" "$1" "$2"
config=$3
steps=${4:-40}
data=$(corpus)
"$LINEA" train --config "$config" --set train.steps="$steps" --set data.path="$data" \
  --set train.output_dir="$WORK/run" --set logging.every_steps=5 --set schedule.warmup_steps=5
m="$WORK/run/metrics.jsonl"
first=$(first_loss "$m"); last=$(last_loss "$m")
echo "$(basename "$config"): loss $first -> $last over $steps steps"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 1.0) }' || fail "loss did not fall: $first -> $last"
