# Two commands on a fresh machine: `make demo` and `make test`.
# Both create or reuse .venv, install flotilla with its dependencies, make sure the
# lakeFS server binary is there (cached per machine), then run. `make test` also installs Label Studio
# in its own virtualenv (cached per machine too) for the labelling tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.flotilla-installed

.PHONY: venv lakefs label-studio browser demo lint test test-fast test-autoscale bench clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

lakefs: venv
	$(BIN)/flotilla hub install

# Label Studio in its own virtualenv under flotilla's cache (its pins clash with ours): ~75 s the first time, then cached.
label-studio: venv
	$(BIN)/flotilla label install

# Headless Chromium for the dashboard browser test (Debian's package; needs root, as on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and not root: the dashboard browser test will be skipped"; fi; }

demo: lakefs
	$(BIN)/flotilla demo

# The habits CI keeps: the layer contracts, ruff (lint + format), the type checker, declared = imported dependencies.
lint: venv
	$(BIN)/lint-imports
	$(BIN)/ruff check platform tests bench
	$(BIN)/ruff format --check platform tests bench
	$(BIN)/mypy
	$(BIN)/deptry platform

# Everything, lint first (a layer broken or a type wrong fails in seconds, not after the 15-minute suite).
test: lint lakefs label-studio browser
	$(BIN)/python -m pytest

# The fast lane while iterating: unit tests only (pure logic, no lakeFS/Ray/browser), about a minute.
test-fast: venv
	$(BIN)/python -m pytest -m "not integration" tests/unit

# cluster.yaml's node types under Ray's own autoscaler (fake multi-node provider, no cloud): a train job adds a
# worker node, succeeds, and the idle node is removed; 2.5-4.5 min on a 2-core machine. `make test` runs it too.
test-autoscale: lakefs
	$(BIN)/python -m pytest -m autoscale tests/integration/test_autoscaling.py

bench: lakefs
	$(BIN)/python bench/hub_branching.py

clean-venv:
	rm -rf $(VENV)
