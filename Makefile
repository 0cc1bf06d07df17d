# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps run test test-unit test-integration lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Java (for the test Kafka broker) and redis-server, from Debian packages where missing.
system-deps:
	@bash scripts/install-system-deps.sh

run: install
	$(BIN)/celrec run --demo

test: install system-deps
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: install system-deps
	$(BIN)/python -m pytest tests/integration

lint: install
	$(BIN)/python -m ruff check .

clean:
	rm -rf $(VENV) .cache .pytest_cache
