# The README's two set-up commands: `make dev` (the main job) and `make test`
# (the whole test suite). Both create .venv and install the project first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test check bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,imap,embedded,mcp,fastmcp]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/sessionstore dev

test: $(STAMP)
	scripts/test-servers
	$(BIN)/pytest

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Benchmarks print figures and ratios against a baseline run beside them; the
# sweep benchmark loads a million sessions (about two minutes).
bench: $(STAMP)
	$(BIN)/python benchmarks/peers.py
	$(BIN)/python benchmarks/memory_layouts.py
	$(BIN)/python benchmarks/store_ops.py
	$(BIN)/python -u benchmarks/breaker_overhead.py
	$(BIN)/python benchmarks/server_requests.py
	$(BIN)/python benchmarks/upstream_pool.py
	$(BIN)/python benchmarks/sweep_cost.py
	$(BIN)/python benchmarks/mcp_calls.py
