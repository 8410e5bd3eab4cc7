#!/bin/bash
# LLM calls per GPU-hour of the batched engine vs one sequence at a time, on a CUDA machine.
#
#   MODEL=/models/mistral-7b-instruct-v0.2.Q4_K_M.gguf bash scripts/bench_generate_gpu.sh
#   VOCAB=vocab.gguf bash scripts/bench_generate_gpu.sh     # no weights there: a proxy
#
# 1. installs what the benchmark imports when missing (pydantic, diskcache; gguf for the
#    proxy), from WHEELS (a folder, no index) when set;
# 2. builds llama-cpp-python with CUDA for this GPU when the installed one has no GPU offload
#    (about 4 minutes on 16 cores; SDIST may point to a local llama-cpp-python source);
# 3. without MODEL, writes a Mistral-7B-shaped Q4_K_M proxy with random weights and VOCAB's
#    tokenizer (scripts/make_proxy_gguf.py): same decode cost, meaningless text;
# 4. loads the model once verbosely (a CUDA problem shows here, not inside the quiet engine),
#    then runs scripts/bench_generate.py with every layer offloaded.
#
# On a machine without a package index, prepare beside the repository and carry along:
#   pip download --only-binary=:all: --python-version 3.12 -d gpu-wheels pydantic diskcache gguf==0.19.0
#   pip download --no-binary=:all: --no-deps -d gpu-wheels llama-cpp-python==0.3.36
#   python scripts/make_proxy_gguf.py --vocab-from "$(emopillars assets path smollm2-135m)" \
#       --vocab-only --out gpu-wheels/vocab.gguf
#   then: WHEELS=gpu-wheels SDIST=gpu-wheels/llama_cpp_python-0.3.36.tar.gz \
#         VOCAB=gpu-wheels/vocab.gguf bash scripts/bench_generate_gpu.sh
# Run it with no other process on the GPU. Status: the CUDA build was done on an H200 (219 s);
# the measurement itself has not completed yet (see README, Speed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
ARCH=${CUDA_ARCH:-native}
pip_install() { $PY -m pip install ${WHEELS:+--no-index --find-links "$WHEELS"} "$@"; }

wanted="pydantic diskcache"
[ -n "${MODEL:-}" ] || wanted="$wanted gguf"
missing=$($PY -c 'import importlib.util as u, sys
print(" ".join(m for m in sys.argv[1:] if u.find_spec(m) is None))' $wanted)
if [ -n "$missing" ]; then
  echo "installing $missing"
  pip_install ${missing/gguf/gguf==0.19.0}
fi

gpu=$($PY -c "import llama_cpp; print(int(llama_cpp.llama_supports_gpu_offload()))" 2>&1 |
      tail -n 1 || true)
if [ "$gpu" != 1 ]; then
  echo "llama-cpp-python: ${gpu:-not importable} (1 = GPU offload); building it with CUDA (arch $ARCH)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$ARCH -DLLAVA_BUILD=OFF" \
    $PY -m pip install --no-deps --no-build-isolation --no-cache-dir --force-reinstall \
    "${SDIST:-llama-cpp-python==0.3.36}"
fi
if [ -z "${MODEL:-}" ]; then
  MODEL=${PROXY_OUT:-/tmp/proxy-mistral7b.gguf}
  if [ ! -f "$MODEL" ]; then   # written aside first: a killed run leaves no half proxy
    $PY scripts/make_proxy_gguf.py --vocab-from "${VOCAB:?set MODEL or VOCAB}" \
      --preset mistral-7b --out "$MODEL.part"
    mv "$MODEL.part" "$MODEL"
  fi
fi
$PY - "$MODEL" <<'EOF'
import sys
from llama_cpp import Llama
llm = Llama(sys.argv[1], n_gpu_layers=-1, n_ctx=2048, verbose=True)
out = llm.create_completion("The story begins", max_tokens=16)
print("load check:", out["usage"])
EOF
$PY -X faulthandler scripts/bench_generate.py --model "$MODEL" --n-gpu-layers -1 \
  --n-seq "${N_SEQ:-32}" --n-batch 2048 --n-ctx 2048 --items "${ITEMS:-32}" --repeats 1 \
  --stages labels,context --max-tokens 128 --answer-mode free
