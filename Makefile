# Two commands on a fresh machine: `make demo` and `make test`.
# Both create or reuse .venv, install flotilla with its dependencies, make sure the
# lakeFS server binary is there (cached per machine), then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.flotilla-installed

.PHONY: venv lakefs browser demo test bench clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

lakefs: venv
	$(BIN)/flotilla hub install

# Headless Chromium for the dashboard browser test (Debian's package; needs root, as on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and not root: the dashboard browser test will be skipped"; fi; }

demo: lakefs
	$(BIN)/flotilla demo

test: lakefs browser
	$(BIN)/python -m pytest

bench: lakefs
	$(BIN)/python bench/hub_branching.py

clean-venv:
	rm -rf $(VENV)
