#!/usr/bin/env bash
# The main job, shortened: the embedded tiny config on the byte-level corpus over 2 MPI ranks
# (DP=2); the loss must fall by at least 1 nat and the run must write its files.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh" "$@"
data=$(corpus)
"$SRC/launch/mpirun.sh" -np 2 "$LINEA" train --set train.steps=60 --set data.path="$data" \
  --set train.output_dir="$WORK/run" --set logging.every_steps=5
m="$WORK/run/metrics.jsonl"
[ -f "$WORK/run/config.pbtxt" ] || fail "no config.pbtxt"
[ -f "$WORK/run/logs/rank0.log" ] || fail "no rank0 log"
grep -q '"tokens_per_s"' "$m" || fail "metrics.jsonl lacks tokens_per_s"
grep -q '"grad_norm"' "$m" || fail "metrics.jsonl lacks grad_norm"
# --set overrides the (embedded) file, and the resolved config in the output dir shows it.
grep -q "steps: 60" "$WORK/run/config.pbtxt" || fail "resolved config does not show train.steps = 60"
first=$(first_loss "$m"); last=$(last_loss "$m")
echo "loss $first -> $last"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 1.0) }' || fail "loss did not fall: $first -> $last"
