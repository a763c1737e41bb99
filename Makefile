# Arbor — two commands: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := run

UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_WORKERS ?= 2

.PHONY: run test lint typecheck bench uv deps services clean

uv:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv

# The venv is rebuilt whenever the lock changes; uv caches built wheels (llama-cpp-python
# takes ~5 minutes to build once per machine).
$(VENV)/.synced: pyproject.toml uv.lock | uv
	$(UV) sync --frozen --all-groups --all-extras
	@touch $@

deps: $(VENV)/.synced

## The main job on embedded defaults: the API on 127.0.0.1:8000 (local model, SQLite).
run: deps
	$(VENV)/bin/arbor serve

## Services the tests need (PostgreSQL, Redis), installed with apt when running as root.
services:
	@bash scripts/test-services.sh > .services.env

## Install everything the tests need and run the whole suite.
test: deps services
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports
	set -a; source .services.env; set +a; \
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -q -p no:cacheprovider $(PYTEST_ARGS)

lint: deps
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

typecheck: deps
	$(VENV)/bin/mypy src

bench: deps
	$(VENV)/bin/arbor bench llm --out benchmarks/results/llm.json

clean:
	rm -rf $(VENV) .services.env
