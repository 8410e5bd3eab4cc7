#!/usr/bin/env bash
# Sharded generation: N independent workers, each runs one shard of the plots, then one
# merge step assembles the dataset. Every shard resumes where it stopped if re-run
# (preemption, a failed node), so a scheduler can simply retry failed array tasks.
#
# SLURM array (one GPU per task), then a dependent merge job:
#   jid=$(sbatch --parsable --array=0-15 --gres=gpu:1 --cpus-per-task=8 \
#         scripts/generate_sharded.sh configs/generate_mistral7b_cuda.yaml 16 \
#         llm.model=/models/mistral-7b-instruct-v0.2.Q4_K_M.gguf corpus.path=/data/wikiplots/plots)
#   sbatch --dependency=afterok:$jid --wrap \
#         "MERGE=1 scripts/generate_sharded.sh configs/generate_mistral7b_cuda.yaml 16 \
#          llm.model=/models/mistral-7b-instruct-v0.2.Q4_K_M.gguf corpus.path=/data/wikiplots/plots"
# (the merge takes the shards' overrides too: its config.yaml and splits come from them)
#
# Kubernetes Indexed Job (completionMode: Indexed, completions: 16, parallelism: 16): the
# container runs `scripts/generate_sharded.sh CONFIG 16 [overrides]`; the shard index comes
# from JOB_COMPLETION_INDEX. out_dir must be on a volume shared by all pods (and the merge).
#
# Locally (4 shards in sequence, then merge):
#   for i in 0 1 2 3; do SHARD=$i scripts/generate_sharded.sh configs/generate_demo.yaml 4; done
#   MERGE=1 scripts/generate_sharded.sh configs/generate_demo.yaml 4
set -euo pipefail
CONFIG=${1:?usage: generate_sharded.sh CONFIG NUM_SHARDS [key=value ...]}
NUM_SHARDS=${2:?usage: generate_sharded.sh CONFIG NUM_SHARDS [key=value ...]}
shift 2
EMOPILLARS=${EMOPILLARS:-emopillars}

if [[ "${MERGE:-0}" == "1" ]]; then
  exec "$EMOPILLARS" generate -c "$CONFIG" "$@" merge=true
fi
SHARD=${SHARD:-${SLURM_ARRAY_TASK_ID:-${JOB_COMPLETION_INDEX:-}}}
if [[ -z "$SHARD" ]]; then
  echo "generate_sharded.sh: set SHARD, or run as a SLURM array task or a k8s indexed job" >&2
  exit 2
fi
exec "$EMOPILLARS" generate -c "$CONFIG" --shard "$SHARD" --num-shards "$NUM_SHARDS" "$@"
