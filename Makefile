# sim2pi — `make demo` and `make test` set everything up from scratch.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: install demo test test-all lint bench clean help

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[sim,train,pi,dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv, install torch (CPU) first, then sim2pi with all extras

demo: $(STAMP)  ## run the whole pipeline on the simulated rover
	$(BIN)/sim2pi demo --out runs/demo

test: $(STAMP)  ## the whole test suite (minus `expensive`)
	$(BIN)/python -m pytest -q -m "not expensive" tests

test-all: $(STAMP)  ## every test, including the expensive ones
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)  ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)  ## all benchmarks; results appended to benchmarks/RESULTS.md
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
