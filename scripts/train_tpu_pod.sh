#!/usr/bin/env bash
# Training on a Cloud TPU pod slice: the same command on every worker VM.
#   scripts/train_tpu_pod.sh TPU_NAME ZONE configs/train_contextless_roberta_large.yaml [key=value ...]
# Needs: the repository and its venv at the same path on every worker (with "jax[tpu]"), and
# out_dir on shared storage (e.g. a gcsfuse mount) so Orbax sees one checkpoint folder.
# On TPU VMs jax.distributed.initialize() finds the coordinator from the TPU metadata.
set -euo pipefail
TPU=${1:?usage: scripts/train_tpu_pod.sh TPU_NAME ZONE CONFIG.yaml [key=value ...]}
ZONE=${2:?zone}
CONFIG=${3:?config}
shift 3
REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
# quoted for the remote shell; no overrides must add nothing (printf alone would add '')
ARGS=""
if [ $# -gt 0 ]; then ARGS=$(printf ' %q' "$@"); fi
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command \
  "cd $(printf %q "$REPO") && .venv/bin/python -m emopillars_jax.cli train --config $(printf %q "$CONFIG") distributed.mode=cluster$ARGS"
