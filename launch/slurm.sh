#!/usr/bin/env bash
# Multi-host data-parallel training on a SLURM cluster: one process per node, every node running
# the same `python -m mmer_jax.main ... --distributed`. jax.distributed.initialize() reads SLURM's
# variables (SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID): the coordinator is
# the first node of the step, on a port derived from the job id.
#
#   sbatch --nodes=2 --gpus-per-node=8 launch/slurm.sh --config=configs/fusion_iemocap.py:synthetic \
#       --workdir=/shared/runs/fusion_2x8 --config.data.data_dir=/shared/tensorflow_datasets
#   salloc --nodes=2 --gpus-per-node=8, then: bash launch/slurm.sh --config=... --workdir=...
#
# Every argument goes to mmer_jax.main. Submit from the repository root with its environment
# active (sbatch passes it on). --workdir must be on a filesystem all nodes share (checked at
# start); data.batch_size is the global batch, split over every device of every node.
# See docs/scaling.md ("Multi-host").
# Preemption: SLURM's SIGTERM makes every task save the step in flight and exit 75
# (mmer_jax/preemption.py EXIT_PREEMPTED); the job then requeues itself and the rerun resumes.
#SBATCH --job-name=mmer_jax
#SBATCH --ntasks-per-node=1
#SBATCH --output=slurm-%j.out
#SBATCH --requeue
set -euo pipefail

# JAX gives a SLURM task only the GPU of its local rank; with one task per node, it gets them all.
status=0
srun --ntasks-per-node=1 bash -c '
  if [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then
    export JAX_LOCAL_DEVICE_IDS="$(seq -s, 0 $((SLURM_GPUS_ON_NODE - 1)))"
  fi
  exec python -m mmer_jax.main --distributed "$@"' mmer_jax "$@" || status=$?
if [[ ${status} -eq 75 && -n "${SLURM_JOB_ID:-}" ]]; then
  echo "preempted: requeueing job ${SLURM_JOB_ID}"
  scontrol requeue "${SLURM_JOB_ID}"
fi
exit "${status}"
