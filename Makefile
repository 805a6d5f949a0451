# yibao — every target bootstraps itself: uv (via pip if missing), then `uv sync --frozen`
# on the system python3. uv never downloads an interpreter.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := python3
# Prefect offline and quiet (STACK-NOTES.md): ephemeral server, no telemetry.
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_LOGGING_LEVEL ?= WARNING
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
export PREFECT_HOME ?= $(CURDIR)/.prefect
export HOME ?= $(CURDIR)

UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
RUN := $(UV) run --frozen --no-sync

.PHONY: bootstrap demo test test-thorough bench lint sample clean

bootstrap:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
	@$(UV) sync --frozen --quiet

demo: bootstrap
	$(RUN) yibao demo

test: bootstrap
	$(RUN) pytest

# The same suite with ten times the random examples in the engine-vs-reference property tests (tens of minutes).
test-thorough: bootstrap
	YIBAO_EXAMPLES=10 $(RUN) pytest

bench: bootstrap
	$(RUN) python benchmarks/run.py
	$(RUN) pytest -m slow -q -o addopts=""

lint: bootstrap
	$(RUN) ruff check flows transforms schemas tests benchmarks

sample: bootstrap
	$(RUN) yibao sample --out data/sample --persons 2000 --year 2025 --months 12 --seed 20250101 --format mixed --invalid-rate 0.002

clean:
	rm -rf .venv .prefect yibao.duckdb yibao.duckdb.wal .yibao_runs
