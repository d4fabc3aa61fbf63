#!/usr/bin/env bash
# Multi-host data-parallel training on a Cloud TPU VM pod slice (e.g. v4-32: 4 hosts of 4 chips):
# one process per host (worker), every worker running the same
# `python -m mmer_jax.main ... --distributed`; jax.distributed.initialize() finds the workers and
# the coordinator (worker 0) from the TPU metadata.
#
#   launch/tpu_vm.sh NAME ZONE --config=configs/fusion_iemocap.py:synthetic \
#       --workdir=/mnt/shared/runs/fusion_v4_32 --config.data.data_dir=/mnt/shared/tensorflow_datasets
#
# Arguments after NAME and ZONE go to mmer_jax.main. Before: the repository at $REPO_DIR (default
# ~/mmer_jax) on every worker, installed for $PYTHON (default python3), e.g.
#   gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all \
#       --command="git clone URL ~/mmer_jax && cd ~/mmer_jax && python3 -m pip install -e '.[tpu]'"
# --workdir must be on a filesystem all workers share (an NFS / Filestore mount; checked at start);
# data.batch_size is the global batch, split over every chip. See docs/scaling.md ("Multi-host").
set -euo pipefail

NAME=${1:?usage: launch/tpu_vm.sh NAME ZONE --config=... [mmer_jax.main flags]}
ZONE=${2:?usage: launch/tpu_vm.sh NAME ZONE --config=... [mmer_jax.main flags]}
shift 2
[[ $# -gt 0 ]] || { echo 'usage: launch/tpu_vm.sh NAME ZONE --config=... [mmer_jax.main flags]' >&2; exit 2; }
REPO_DIR=${REPO_DIR:-'~/mmer_jax'}  # expanded on the workers
PYTHON=${PYTHON:-python3}
printf -v FLAGS ' %q' "$@"  # quoted for the remote shell

gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all \
  --command="cd $REPO_DIR && $PYTHON -m mmer_jax.main --distributed$FLAGS"
