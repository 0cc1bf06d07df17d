# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# --no-compile: byte-compiling all of torch at install time doubles the install; imports
# compile what they use.
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile
# `make run` installs only what the service needs; `make test` adds the dev tools.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install install-run system-deps run test test-unit test-integration lint clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) -e '.[dev]'
	touch $@ $(RUN_STAMP)

install-run: $(RUN_STAMP)
install: $(DEV_STAMP)

# Java (for the test Kafka broker) and redis-server, from Debian packages where missing.
system-deps:
	@bash scripts/install-system-deps.sh

run: install-run
	$(BIN)/celrec run --demo

test: install system-deps lint
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install system-deps
	$(BIN)/python -m pytest tests/integration

lint: install
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .cache .pytest_cache
