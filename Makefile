# The README's commands. Each sets up .venv first (once), from pyproject.toml.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test test-unit lint

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	touch $@

demo: $(BIN)/.installed  ## set up, then run the whole DAG on the built-in demo
	$(BIN)/snakemake --profile profiles/local

test: $(BIN)/.installed  ## set up, then run every test: the unit tier and the end-to-end tier (the demo DAG)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -v --durations=15

test-unit: $(BIN)/.installed  ## the unit tier alone (no Snakemake run of the demo)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -v --durations=10 tests/unit

lint: $(BIN)/.installed  ## formatting and lint, as the unit tier checks them
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
