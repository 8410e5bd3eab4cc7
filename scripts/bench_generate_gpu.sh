#!/bin/bash
# LLM calls per GPU-hour of the batched engine vs one sequence at a time, on a CUDA machine.
#
#   MODEL=/models/mistral-7b-instruct-v0.2.Q4_K_M.gguf bash scripts/bench_generate_gpu.sh
#   VOCAB=vocab.gguf bash scripts/bench_generate_gpu.sh     # no weights there: a proxy
#
# 1. builds llama-cpp-python with CUDA for this GPU when the installed one has no GPU offload
#    (about 4 minutes on 16 cores; SDIST may point to a local llama-cpp-python source tree);
# 2. without MODEL, writes a Mistral-7B-shaped Q4_K_M proxy with random weights and VOCAB's
#    tokenizer (scripts/make_proxy_gguf.py): same decode cost, meaningless text;
# 3. loads the model once verbosely (a CUDA problem shows here, not inside the quiet engine),
#    then runs scripts/bench_generate.py with every layer offloaded.
# Run it with no other process on the GPU. Status: the CUDA build was done on an H200 (219 s);
# the measurement itself has not completed yet (see README, Speed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
ARCH=${CUDA_ARCH:-native}
if ! $PY -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 1)" 2>/dev/null; then
  echo "building llama-cpp-python with CUDA (arch $ARCH)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$ARCH -DLLAVA_BUILD=OFF" \
    $PY -m pip install --no-deps --no-build-isolation --no-cache-dir --force-reinstall \
    "${SDIST:-llama-cpp-python==0.3.36}"
fi
if [ -z "${MODEL:-}" ]; then
  MODEL=${PROXY_OUT:-/tmp/proxy-mistral7b.gguf}
  [ -f "$MODEL" ] || $PY scripts/make_proxy_gguf.py --vocab-from "${VOCAB:?set MODEL or VOCAB}" \
    --preset mistral-7b --out "$MODEL"
fi
$PY - "$MODEL" <<'EOF'
import sys
from llama_cpp import Llama
llm = Llama(sys.argv[1], n_gpu_layers=-1, n_ctx=2048, verbose=True)
out = llm.create_completion("The story begins", max_tokens=16)
print("load check:", out["usage"])
EOF
PYTHONPATH=. $PY -X faulthandler scripts/bench_generate.py --model "$MODEL" --n-gpu-layers -1 \
  --n-seq "${N_SEQ:-32}" --n-batch 2048 --n-ctx 2048 --items "${ITEMS:-32}" --repeats 1 \
  --stages labels,context --max-tokens 128 --answer-mode free
