# One target per task, the same locally and in CI.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test test-fast lint format bench chaos clean

setup:
	@bash scripts/bootstrap.sh

## run the whole local stack with the demo feed (Ctrl-C stops it)
run: setup
	$(BIN)/qianshao up

## set up, lint and run every test (unit, integration, end-to-end)
test: setup lint
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## benchmarks: ratios against baselines measured in the same run
bench: setup
	$(BIN)/python -m bench

## fault injection on the whole pipeline, books checked (the short form runs in `make test`)
chaos: setup
	$(BIN)/python -m bench.chaos

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
