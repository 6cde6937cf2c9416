#!/bin/bash
# Trains on the hosts of an Open MPI hostfile: one process per host, each driving all its GPUs.
#
#   scripts/mpi/train.sh CONFIG WORKDIR [train.py flags...]
#
# HOSTFILE lists the hosts, one line each ("host0 slots=1"); PROCESSES is their number. Run it
# from the repository, at the same path on every host, with the environment that runs train.py
# activated. SIGTERM to mpirun reaches every process, which saves a checkpoint and exits within
# SAVE_SECONDS (mpirun kills them after that); the same command resumes.
set -euo pipefail
hostfile=${HOSTFILE:-hostfile}
processes=${PROCESSES:-2}
save_seconds=${SAVE_SECONDS:-120}
if (($# < 2)); then
  echo "usage: scripts/mpi/train.sh CONFIG WORKDIR [train.py flags...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
exec mpirun -np "$processes" --hostfile "$hostfile" --map-by node -x PATH \
  --mca odls_base_sigkill_timeout "$save_seconds" \
  python train.py --config "$config" --workdir "$workdir" "$@"
