#!/usr/bin/env bash
# Multi-host GPU training under SLURM: one task per node, every GPU of the node visible to it.
#   sbatch --nodes=4 scripts/train_slurm.sh configs/train_contextless_roberta_large.yaml [key=value ...]
# jax.distributed.initialize() reads the SLURM environment (coordinator = first node), each
# process tokenizes only its logical data shards, and Orbax writes one checkpoint folder, so
# out_dir must be on a filesystem all nodes share. A preempted/requeued job resumes from the
# latest good checkpoint (SIGTERM -> final save).
#SBATCH --job-name=emopillars-train
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
#SBATCH --signal=B:TERM@120
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail
CONFIG=${1:?usage: sbatch scripts/train_slurm.sh CONFIG.yaml [key=value ...]}
shift
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
PY=${PYTHON:-.venv/bin/python}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
# GPU builds of jaxlib: pip install "jax[cuda12]==0.10.2" (the tested version) in the venv first.
# --kill-on-bad-exit: if one host dies the others stop instead of hanging in a collective.
exec srun --kill-on-bad-exit=1 "$PY" -m emopillars_jax.cli train --config "$CONFIG" \
    distributed.mode=cluster "$@"
