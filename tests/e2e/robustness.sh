#!/usr/bin/env bash
# The trainer survives faults (issue 7, item 5) on 2 CPU ranks with the tiny config:
#   1. a NaN injected into rank 0's gradient at step 4 is caught on both ranks (the gradient norm is
#      global), the step is skipped and counted; with train.nonfinite = stop the run fails naming
#      the step;
#   2. SIGTERM to every rank mid-run: all ranks finish the same step, write a complete checkpoint of
#      it, stop, and the job exits 0; the rerun resumes from that checkpoint;
#   3. a rank stopped mid-run (SIGSTOP: it hangs without dying) makes the other rank's collective
#      time out (parallel.collective_timeout_s = 5): the job exits non-zero within seconds, with
#      the operation and group in the message; a rank killed mid-run (SIGKILL) ends the job
#      non-zero too; with checkpoint.every_steps = 2 the rerun resumes from the last checkpoint.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh" "$@"
data=$(corpus)
# The rank processes of a job started in the background as `mpi ... &` (job -> mpirun -> ranks).
ranks_of() {
  local launcher
  for launcher in $(pgrep -P "$1"); do pgrep -P "$launcher" || true; done
}
mpi() { "$SRC/launch/mpirun.sh" -np 2 "$LINEA" train --set data.path="$data" \
  --set schedule.warmup_steps=2 --set logging.every_steps=1 "$@"; }

# 1. NaN injection
mpi --set train.steps=8 --set train.inject_nan_step=4 --set train.output_dir="$WORK/nan" \
  >"$WORK/nan.log" 2>&1 || { cat "$WORK/nan.log"; fail "the NaN run did not finish"; }
m="$WORK/nan/metrics.jsonl"
grep '"step":4,' "$m" | grep -q '"skipped":true' || fail "step 4 not marked skipped: $(grep '"step":4,' "$m")"
tail -1 "$m" | grep -q '"skipped_steps":1' || fail "skipped_steps is not 1 at the end: $(tail -1 "$m")"
[ "$(grep -c '"skipped":true' "$m")" = 1 ] || fail "more than one step skipped"
grep -q "step 4: non-finite" "$WORK/nan.log" || fail "no warning for the skipped step"
echo "NaN at step 4: skipped and counted, the other 7 steps trained"
expect_error mpi --set train.steps=8 --set train.inject_nan_step=4 --set train.nonfinite=stop \
  --set train.output_dir="$WORK/nan_stop" >/dev/null
contains "$LAST_ERROR" "at step 4 (train.nonfinite = stop)"

# 2. SIGTERM mid-run
mpi --set train.steps=100000 --set train.output_dir="$WORK/term" >"$WORK/term.log" 2>&1 &
job=$!
for _ in $(seq 600); do
  [ -s "$WORK/term/metrics.jsonl" ] && [ "$(wc -l <"$WORK/term/metrics.jsonl")" -ge 3 ] && break
  sleep 0.1
done
# As Slurm does: the signal goes to every rank (the children of mpirun), not to the launcher.
ranks=$(ranks_of $job)
[ "$(echo $ranks | wc -w)" = 2 ] || fail "SIGTERM: expected 2 rank processes under mpirun, found '$ranks'"
kill -TERM $ranks
rc=0
wait $job || rc=$?
[ $rc -eq 0 ] || { tail -20 "$WORK/term.log"; fail "SIGTERM: the job exited $rc, expected 0"; }
grep -q "stopping after step" "$WORK/term.log" || fail "no 'stopping after step' in the log"
steps=$(wc -l <"$WORK/term/metrics.jsonl")
[ "$steps" -lt 100000 ] || fail "the run did not stop early"
echo "SIGTERM: stopped cleanly after step $steps, exit 0"
ck="$WORK/term/checkpoints/step-$steps"
[ -f "$ck/COMPLETE" ] || fail "SIGTERM: no complete checkpoint $ck ($(ls "$WORK/term/checkpoints" 2>&1))"
mpi --set train.steps=$((steps + 2)) --set train.output_dir="$WORK/term" >"$WORK/term2.log" 2>&1 ||
  { tail -20 "$WORK/term2.log"; fail "SIGTERM: the rerun failed"; }
grep -q "resumed from .*step-$steps (step $steps" "$WORK/term2.log" ||
  fail "SIGTERM: the rerun did not resume from step $steps: $(grep -m1 checkpoint "$WORK/term2.log")"
[ "$(wc -l <"$WORK/term/metrics.jsonl")" = $((steps + 2)) ] || fail "SIGTERM: metrics after the rerun"
echo "SIGTERM: checkpoint step-$steps complete; the rerun resumed from it and trained 2 more steps"

# 3. a hung rank, then a killed rank
for how in STOP KILL; do
  mpi --set train.steps=100000 --set parallel.collective_timeout_s=5 \
    --set checkpoint.every_steps=2 --set train.output_dir="$WORK/$how" >"$WORK/$how.log" 2>&1 &
  job=$!
  for _ in $(seq 600); do
    [ -f "$WORK/$how/checkpoints/step-2/COMPLETE" ] && break
    sleep 0.1
  done
  victim=$(ranks_of $job | tail -1)
  [ -n "$victim" ] || fail "$how: no rank process found"
  t0=$SECONDS
  kill -"$how" "$victim"
  rc=0
  wait $job || rc=$?
  waited=$((SECONDS - t0))
  kill -CONT "$victim" 2>/dev/null || true
  kill -KILL "$victim" 2>/dev/null || true
  [ $rc -ne 0 ] || fail "$how: the job exited 0"
  [ $waited -le 60 ] || fail "$how: the job took $waited s to end"
  if [ "$how" = STOP ]; then
    grep -q "did not finish within 5 s" "$WORK/$how.log" ||
      { tail -20 "$WORK/$how.log"; fail "STOP: no collective timeout message"; }
    grep "did not finish" "$WORK/$how.log" | head -1
  fi
  echo "SIG$how on one rank: the job ended with code $rc after $waited s"
  last=$(ls "$WORK/$how/checkpoints" | sed -n 's/^step-\([0-9]*\)$/\1/p' | sort -n | tail -1)
  [ -n "$last" ] || fail "$how: no checkpoint before the fault"
  mpi --set train.steps=$((last + 1)) --set checkpoint.every_steps=2 \
    --set train.output_dir="$WORK/$how" >"$WORK/$how.rerun.log" 2>&1 ||
    { tail -20 "$WORK/$how.rerun.log"; fail "$how: the rerun failed"; }
  grep -q "resumed from .*step-$last (step $last" "$WORK/$how.rerun.log" ||
    fail "$how: the rerun did not resume from step $last"
  echo "SIG$how: the rerun resumed from checkpoint step-$last"
done
