#!/usr/bin/env bash
# Training-step benchmark on GPUs: runs `linea train` on the A0.3B-2B zoo configs for a few steps
# per case and reports, from metrics.jsonl, the median step time after warm-up, tokens/s per GPU,
# MFU (6 x active parameters without the input embedding x tokens/s per GPU over the 989 TFLOP/s
# bf16 peak, the convention of the anchors; plus the figure with the sequence FLOPs) and the peak
# GPU memory of rank 0's allocator. Writes OUT/train_bench.json, OUT/train_bench.md and one log per
# case; every case runs under `timeout`, so a case that hangs or runs out of memory is recorded as
# failed and the rest still run.
#
#   bench/train_bench.sh OUT_DIR [CASES_FILE]
# CASES_FILE lines: NAME GPUS CONFIG SEQ MICRO RECOMPUTE [--set ...]; default: bench/train_cases.txt.
# GPUS > 1 runs under mpirun (one rank per GPU, NCCL); cases needing more GPUs than visible are
# skipped and recorded as such. Environment: LINEA_BIN (default build-gpu/linea), STEPS (default
# 6; the first 2 are warm-up), CASE_TIMEOUT seconds (default 240), DEVICE (cuda, default; cpu runs
# the cases on CPU ranks, GPUS then meaning ranks: tokens/s per rank, no MFU or GPU memory).
set -uo pipefail
OUT=${1:?usage: bench/train_bench.sh OUT_DIR [CASES_FILE]}
cd "$(dirname "$0")/.."
CASES=${2:-bench/train_cases.txt}
BIN=${LINEA_BIN:-build-gpu/linea}
STEPS=${STEPS:-6}
LIMIT=${CASE_TIMEOUT:-240}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
[ "$DEVICE" = cpu ] && gpus=1000000  # CPU ranks: no limit
results="$OUT/train_bench.jsonl"
: >"$results"

while read -r name ngpu config seq micro recompute extra; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  if ((ngpu > gpus)); then
    echo "{\"case\":\"$name\",\"status\":\"skipped: needs $ngpu GPUs, $gpus visible\"}" >>"$results"
    echo "[train_bench] $name skipped (needs $ngpu GPUs)"
    continue
  fi
  run_dir="$OUT/runs/$name"
  rm -rf "$run_dir"
  args=(train --config "$config" --set train.device="$DEVICE" --set train.steps="$STEPS"
    --set schedule.warmup_steps=1 --set logging.every_steps=1 --set train.grad_accum_steps=1
    --set data.seq_len="$seq" --set train.micro_batch_size="$micro"
    --set train.recompute="$recompute" --set train.output_dir="$run_dir"
    --set checkpoint.every_steps=0 --set checkpoint.auto_resume=false)
  # shellcheck disable=SC2206
  [[ -n "$extra" ]] && args+=($extra)
  launcher=()
  ((ngpu > 1)) && launcher=(launch/mpirun.sh -np "$ngpu")
  echo "[train_bench] $name: ${launcher[*]} $BIN ${args[*]}"
  t0=$SECONDS
  timeout --kill-after=10 "$LIMIT" "${launcher[@]}" "$BIN" "${args[@]}" >"$OUT/$name.log" 2>&1
  rc=$?
  python3 - "$name" "$ngpu" "$config" "$seq" "$micro" "$recompute" "$rc" "$((SECONDS - t0))" \
    "$run_dir/metrics.jsonl" "$OUT/$name.log" >>"$results" <<'PY'
import json, statistics, sys
name, ngpu, config, seq, micro, recompute, rc, wall, metrics, log = sys.argv[1:]
row = {"case": name, "gpus": int(ngpu), "config": config, "seq_len": int(seq),
       "micro_batch": int(micro), "recompute": recompute, "rc": int(rc), "wall_s": int(wall)}
steps = []
try:
    steps = [json.loads(l) for l in open(metrics) if l.strip()]
except OSError:
    pass
timed = steps[2:] if len(steps) > 2 else steps[1:]
if rc == "0" and timed:
    med = lambda k: statistics.median(s[k] for s in timed)
    gpu = "tokens_per_s_per_gpu" in timed[0]
    row.update(status="ok", steps=len(steps), step_time_s=med("step_time_s"),
               tokens_per_step=timed[0]["tokens"],
               tokens_per_s_per_gpu=med("tokens_per_s_per_gpu") if gpu
               else statistics.median(s["tokens_per_s"] for s in timed) / int(ngpu),
               mfu=med("mfu") if gpu else None,
               mfu_with_sequence_flops=med("mfu_with_sequence_flops") if gpu else None,
               gpu_peak_gb=max(s["gpu_peak_bytes"] for s in steps) / 1e9 if gpu else None,
               losses=[s["loss"] for s in steps])
else:
    tail = open(log, errors="replace").read()[-600:] if rc != "0" else ""
    row.update(status="failed" if rc != "124" else "timed out", log_tail=tail)
print(json.dumps(row))
PY
  tail -n 1 "$results"
done <"$CASES"

python3 - "$results" "$OUT/train_bench.json" "$OUT/train_bench.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
json.dump(rows, open(sys.argv[2], "w"), indent=1)
lines = ["| case | GPUs | seq x micro | recompute | step s | tokens/s/GPU | MFU | MFU+seq | peak GB | loss first -> last |",
         "|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    if r.get("status") != "ok":
        lines.append(f"| {r['case']} | {r.get('gpus','')} | {r.get('seq_len','')} x {r.get('micro_batch','')} | {r.get('recompute','')} | {r.get('status')} | | | | | |")
        continue
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"
    gb = "-" if r["gpu_peak_gb"] is None else f"{r['gpu_peak_gb']:.1f}"
    lines.append(f"| {r['case']} | {r['gpus']} | {r['seq_len']} x {r['micro_batch']} | {r['recompute']} | "
                 f"{r['step_time_s']:.3f} | {r['tokens_per_s_per_gpu']:,.0f} | {pct(r['mfu'])} | "
                 f"{pct(r['mfu_with_sequence_flops'])} | {gb} | "
                 f"{r['losses'][0]:.3f} -> {r['losses'][-1]:.3f} |")
open(sys.argv[3], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
