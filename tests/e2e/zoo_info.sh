#!/usr/bin/env bash
# Every configs/zoo/*.pbtxt validates and `linea info model` counts it (without building it); the
# Linear-MoE names hold: A0.3B-2B has ~0.3B active and ~2B total parameters, A1B-7B ~1B and ~7B.
# (The zoo is far too big to train on CPU; the train-a-few-steps tests leave it out.)
set -euo pipefail
source "$(dirname "$0")/lib/common.sh" "$@"

# The value of a top-level integer/number field of the --json output.
json_field() { sed -nE "s/^  \"$2\": ([0-9.eE+-]+),?$/\1/p" <<<"$1"; }
# Fails unless lo <= value <= hi.
in_range() {
  awk -v v="$2" -v lo="$3" -v hi="$4" 'BEGIN { exit !(v >= lo && v <= hi) }' ||
    fail "$1 = $2 is outside [$3, $4]"
}

n=0
for config in "$SRC"/configs/zoo/*.pbtxt; do
  name=$(basename "$config" .pbtxt)
  "$LINEA" validate-config --config "$config" >/dev/null || fail "$name does not validate"
  "$LINEA" validate-config --config "$config" --world-size 8 --set parallel.ep=8 >/dev/null ||
    fail "$name does not validate on 8 ranks with ep = 8"
  table=$("$LINEA" info model --config "$config")
  contains "$table" "TOTAL parameters"; contains "$table" "ACTIVE parameters"
  contains "$table" "UNTIED"; contains "$table" "TRAINING FLOPs per token"
  json=$("$LINEA" info model --config "$config" --json)
  total=$(json_field "$json" total); total_ne=$(json_field "$json" total_without_embedding)
  total_nonemb=$(json_field "$json" total_non_embedding)
  active=$(json_field "$json" active); active_nonemb=$(json_field "$json" active_non_embedding)
  active_ne=$(json_field "$json" active_without_embedding)
  flops=$(json_field "$json" train_flops_per_token)
  echo "$name: total $total ($total_ne without input embedding, $total_nonemb non-embedding)," \
    "active $active ($active_ne, $active_nonemb), train FLOPs/token $flops"
  case "$name" in
    a0.3b-2b_*)
      in_range "$name active non-embedding" "$active_nonemb" 0.25e9 0.40e9
      in_range "$name total" "$total" 1.8e9 2.6e9
      in_range "$name total non-embedding" "$total_nonemb" 1.8e9 2.6e9 ;;
    a1b-7b_*)
      in_range "$name active non-embedding" "$active_nonemb" 0.9e9 1.3e9
      in_range "$name total" "$total" 6.5e9 7.6e9
      in_range "$name total non-embedding" "$total_nonemb" 6.5e9 7.6e9 ;;
    *) fail "unknown zoo config $name: add its expected ranges here" ;;
  esac
  # 6 x active matmul parameters at least, plus the sequence terms.
  awk -v f="$flops" -v a="$active_nonemb" 'BEGIN { exit !(f > 6 * a) }' || fail "$name FLOPs too low"
  n=$((n + 1))
done
[ "$n" -ge 5 ] || fail "expected at least 5 zoo configs, found $n"

# Without --config: the embedded default; with a bad override: the config loader's message.
"$LINEA" info model | grep -q "TIED" || fail "info model on the embedded default"
expect_error "$LINEA" info model --set model.hiden_size=3; contains "$LAST_ERROR" "hiden_size"
expect_error "$LINEA" info model --config "$WORK/missing.pbtxt"; contains "$LAST_ERROR" "missing.pbtxt"
echo "all $n zoo configs checked"
