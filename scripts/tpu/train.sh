#!/bin/bash
# Trains on every worker of a TPU pod slice at once (e.g. a v4-32).
#
#   scripts/tpu/train.sh CONFIG WORKDIR [train.py flags...]
#
# TPU and ZONE name the slice. Each worker needs this repository at ~/tea_jax with its
# requirements installed, and the data at the same path; the workdir is shared (a gs:// bucket).
set -euo pipefail
tpu=${TPU:-my-pod}
zone=${ZONE:-us-central2-b}
if (($# < 2)); then
  echo "usage: scripts/tpu/train.sh CONFIG WORKDIR [train.py flags...]" >&2
  exit 2
fi
command="cd ~/tea_jax && python train.py --config $1 --workdir $2 ${*:3}"
exec gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$command"
