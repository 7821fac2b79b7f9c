# The two commands of the README. Both set up .venv first (once), from pyproject.toml.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	touch $@

demo: $(BIN)/.installed  ## set up, then run the whole DAG on the built-in demo
	$(BIN)/snakemake --profile profiles/local

test: $(BIN)/.installed  ## set up, then run the tests (unit tests and the demo DAG end to end)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -v --durations=15
