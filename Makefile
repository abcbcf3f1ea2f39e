# The two quick-start commands: `make demo` and `make test`. Each sets up what is missing first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup system demo test test-all oclgrind reliability lint clean

setup: system $(VENV)/.installed

system:
	@.ci/install-system-packages

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

demo: setup  # the main job: train the seed network on the embedded data set (no download)
	$(BIN)/convgraph compile specs/seed.yaml
	$(BIN)/convgraph run specs/seed.yaml --checkpoint-dir out/seed --metrics out/seed/metrics.jsonl

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: setup  # the slow tiers too (Oclgrind sweeps, fuzzing, accuracy)
	$(BIN)/python -m pytest -m "slow or not slow" $(PYTEST_ARGS)

oclgrind: setup  # every kernel of the harness under Oclgrind on a simulated small device (hours)
	OCLGRIND_SWEEP=1 $(BIN)/python -m pytest -m slow tests/test_oclgrind.py

# the reliability report (table + benchmarks/results/reliability.json): minutes;
# FULL=1: 10,000 fuzzed specs and the whole Oclgrind sweep (hours)
reliability: setup
	$(BIN)/python benchmarks/reliability.py $(if $(FULL),--full)

lint: setup
	$(BIN)/ruff check convgraph tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
