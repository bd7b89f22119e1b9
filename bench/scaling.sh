#!/usr/bin/env bash
# Scaling runs of issue 8, through bench/train_bench.sh: LASP-2 sequence parallelism at a fixed
# number of tokens per rank (the sequence grows with SP), the longest sequence SP = 8 fits, and
# expert parallelism. Writes OUT/scaling.md and OUT/scaling.json (the train_bench rows plus the
# parallel efficiency t(1) / t(W) per step) and one log per case.
#
#   bench/scaling.sh OUT_DIR [gpu|cpu]
# gpu (default): the A0.3B-2B Lightning configs (pure and 1/4 hybrid) at 16384 tokens per GPU with
#   SP = 1, 2, 4, 8; SP = 8 at 256K, 512K and 1M tokens; A1B-7B with EP = 1, 2, 4, 8 and
#   DP x SP x EP = 2 x 2 x 2 (5 steps each: their losses against EP = 1 on the same global batch).
#   Cases needing more GPUs than visible are recorded as skipped.
# cpu: the same layouts on CPU ranks with the tiny configs (1024 tokens per rank; SP = 1, 2, 4;
#   EP = 1, 2, 4 on configs/moe_tiny.pbtxt): a check that the script and the layouts run, not a
#   speed figure on a small machine.
set -uo pipefail
OUT=${1:?usage: bench/scaling.sh OUT_DIR [gpu|cpu]}
MODE=${2:-gpu}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
cases="$OUT/scaling_cases.txt"
: >"$cases"
if [ "$MODE" = gpu ]; then
  per=16384
  for c in lightning lightning_hybrid; do
    for sp in 1 2 4 8; do
      echo "sp_${c}_${sp} $sp configs/zoo/a0.3b-2b_$c.pbtxt $((per * sp)) 1 full --set parallel.sp=$sp" >>"$cases"
    done
  done
  for seq in 262144 524288 1048576; do
    echo "longest_sp8_$seq 8 configs/zoo/a0.3b-2b_lightning_hybrid.pbtxt $seq 1 full --set parallel.sp=8" >>"$cases"
  done
  # Global batch 8 x 4096 in every EP layout: micro-batch 8 / DP.
  echo "ep_1 1 configs/zoo/a1b-7b_lightning_hybrid.pbtxt 4096 8 full" >>"$cases"
  for ep in 2 4 8; do
    echo "ep_$ep $ep configs/zoo/a1b-7b_lightning_hybrid.pbtxt 4096 $((8 / ep)) full --set parallel.ep=$ep" >>"$cases"
  done
  echo "dp2_sp2_ep2 8 configs/zoo/a1b-7b_lightning_hybrid.pbtxt 4096 2 full --set parallel.sp=2 --set parallel.ep=2" >>"$cases"
  export DEVICE=cuda
else
  per=1024
  for c in tiny hybrid_tiny; do
    for sp in 1 2 4; do
      echo "sp_${c}_${sp} $sp configs/$c.pbtxt $((per * sp)) 1 none --set parallel.sp=$sp --set model.mixer.chunk_size=64" >>"$cases"
    done
  done
  echo "ep_1 1 configs/moe_tiny.pbtxt 256 8 none" >>"$cases"
  for ep in 2 4; do
    echo "ep_$ep $ep configs/moe_tiny.pbtxt 256 $((8 / ep)) none --set parallel.ep=$ep" >>"$cases"
  done
  export DEVICE=cpu
fi
STEPS=${STEPS:-5} bench/train_bench.sh "$OUT" "$cases" >"$OUT/train_bench.log" 2>&1

python3 - "$OUT/train_bench.json" "$OUT/scaling.json" "$OUT/scaling.md" <<'PY'
import json, re, sys
rows = json.load(open(sys.argv[1]))
ok = {r["case"]: r for r in rows if r.get("status") == "ok"}
out = {"rows": rows, "sp_efficiency": {}, "ep_losses": {}}
lines = ["| case | ranks | tokens/step | step s | tokens/s per rank | t(1)/t(W) |", "|---|---|---|---|---|---|"]
for r in rows:
    m = re.match(r"sp_(.+)_(\d+)$", r["case"])
    eff = ""
    if m and r.get("status") == "ok" and f"sp_{m.group(1)}_1" in ok:
        e = ok[f"sp_{m.group(1)}_1"]["step_time_s"] / r["step_time_s"]
        out["sp_efficiency"][r["case"]] = e
        eff = f"{e:.2f}"
    if r.get("status") != "ok":
        lines.append(f"| {r['case']} | {r.get('gpus', '')} | | {r.get('status')} | | |")
        continue
    lines.append(f"| {r['case']} | {r['gpus']} | {r['tokens_per_step']} | {r['step_time_s']:.3f} | "
                 f"{r['tokens_per_s_per_gpu']:,.0f} | {eff} |")
if "ep_1" in ok:
    base = ok["ep_1"]["losses"]
    lines += ["", "| EP layout | losses | max rel diff vs EP = 1 |", "|---|---|---|"]
    for name, r in ok.items():
        if name.startswith("ep_") or name.startswith("dp2_"):
            d = max(abs(a - b) / abs(b) for a, b in zip(r["losses"], base))
            out["ep_losses"][name] = {"losses": r["losses"], "max_rel_diff": d}
            lines.append(f"| {name} | {' '.join(f'{v:.4f}' for v in r['losses'])} | {d:.2e} |")
json.dump(out, open(sys.argv[2], "w"), indent=1)
open(sys.argv[3], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
