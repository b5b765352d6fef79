# Two commands on a fresh machine: `make demo` and `make test`.
# Both create or reuse .venv, install flotilla with its dependencies, make sure the
# lakeFS server binary is there (cached per machine), then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.flotilla-installed

.PHONY: venv lakefs demo test bench clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

lakefs: venv
	$(BIN)/flotilla hub install

demo: lakefs
	$(BIN)/flotilla demo

test: lakefs
	$(BIN)/python -m pytest

bench: lakefs
	$(BIN)/python bench/hub_branching.py

clean-venv:
	rm -rf $(VENV)
