#!/bin/bash
# Trains on the hosts of an Open MPI hostfile: one process per host, each driving all its GPUs.
#
#   scripts/mpi/train.sh CONFIG WORKDIR [train.py flags...]
#
# HOSTFILE lists the hosts, one line each ("host0 slots=1"); PROCESSES is their number. Run it
# from the repository, at the same path on every host, with the environment that runs train.py
# activated. On SIGTERM to every train.py process (a host's shutdown, a scheduler's preemption)
# they save a checkpoint and exit 0; the same command resumes. SIGTERM to mpirun itself does not
# reach them reliably (Open MPI 4.1).
set -euo pipefail
hostfile=${HOSTFILE:-hostfile}
processes=${PROCESSES:-2}
if (($# < 2)); then
  echo "usage: scripts/mpi/train.sh CONFIG WORKDIR [train.py flags...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
# --bind-to none: the one process of a host uses all of its cores (its data loading too); Open MPI
# would bind it to one core.
exec mpirun -np "$processes" --hostfile "$hostfile" --map-by node --bind-to none -x PATH \
  python train.py --config "$config" --workdir "$workdir" "$@"
