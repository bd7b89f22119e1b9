#!/usr/bin/env bash
# Train on one machine with N MPI ranks (CPU): launch/train_mpirun.sh N [linea train arguments]
#   launch/train_mpirun.sh 2 --config configs/tiny.pbtxt --set train.steps=100
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
np=${1:?usage: train_mpirun.sh NUM_RANKS [linea train args...]}
shift
exec "$here/mpirun.sh" -np "$np" "${LINEA_BIN:-$here/../build/linea}" train "$@"
