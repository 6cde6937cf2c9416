#!/bin/bash
# Trains on the hosts of an Open MPI hostfile: one process per host, each driving all its GPUs.
#
#   scripts/mpi/train.sh CONFIG WORKDIR [train.py flags...]
#
# HOSTFILE lists the hosts, one line each ("host0 slots=1"); PROCESSES is their number. Run it
# from the repository, at the same path on every host, with the environment that runs train.py
# activated. SIGTERM to this script (a scheduler's preemption, `kill PID`) reaches every train.py
# process as SIGUSR1, which mpirun forwards and train.py takes as SIGTERM: they save a checkpoint
# and exit 0, and the same command resumes. (SIGTERM to mpirun itself would kill them a second
# after passing it on, before they save.)
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
mpirun -np "$processes" --hostfile "$hostfile" --map-by node --bind-to none -x PATH \
  python train.py --config "$config" --workdir "$workdir" "$@" &
mpirun=$!
trap 'kill -USR1 "$mpirun"' TERM
# `wait` returns early when the trap runs; wait again until mpirun has exited.
status=0
while kill -0 "$mpirun" 2>/dev/null; do
  status=0
  wait "$mpirun" || status=$?
done
exit "$status"
