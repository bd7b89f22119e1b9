#!/usr/bin/env bash
# mpirun with the flags Linea's CPU runs need everywhere: oversubscription (more ranks than cores,
# as on CI), running as root inside containers, and no attempt to use high-speed fabrics that a
# laptop or CI machine lacks. Usage: launch/mpirun.sh -np N PROGRAM [ARGS...]
set -euo pipefail
extra=(--stdin none --oversubscribe --bind-to none --mca btl self,tcp,vader --mca btl_tcp_if_include lo)
if [ "$(id -u)" = 0 ]; then extra+=(--allow-run-as-root); fi
export OMPI_MCA_rmaps_base_oversubscribe=1
exec mpirun "${extra[@]}" "$@"
