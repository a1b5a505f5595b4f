# Two commands a new machine needs: `make drill` (the main job) and `make test`.
# Both create .venv on first use and install the package into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: test test-newest test-all lint drill bench format clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ needed"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,lint,prometheus]'
	touch $@

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	touch $@

## test: the whole suite (unit, integration against a real server, fault drills)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The newest CPython pyenv has here (3.14 when installed): the whole suite runs under it
# with DeprecationWarning as an error, so an API removed in the next release (like
# itertools pickling in 3.14) fails here first. Empty where pyenv is absent (GitHub CI
# runs every version in its matrix instead).
NEWEST_PYTHON ?= $(shell command -v pyenv >/dev/null 2>&1 && \
	v=$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.[0-9]+\.[0-9]+$$' | sort -V | tail -1) && \
	[ -n "$$v" ] && echo "$$(pyenv root)/versions/$$v/bin/python")
NEWEST_VENV := .venv-newest
# Bounded: a hung test must not hold CI; the whole suite takes about 5 minutes here.
NEWEST_TIME_LIMIT ?= 1800

$(NEWEST_VENV)/.installed-test: pyproject.toml
	@test -n "$(NEWEST_PYTHON)" || { echo "no pyenv Python found"; exit 1; }
	rm -rf $(NEWEST_VENV)
	$(NEWEST_PYTHON) -m venv $(NEWEST_VENV)
	$(NEWEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(NEWEST_VENV)/bin/python -m pip install -q -e '.[test,prometheus]'
	touch $@

## test-newest: the whole suite under the newest pyenv CPython, DeprecationWarning = error
# (integration tests and drills included: a 3.13-only asyncio behaviour once hid there)
test-newest:
	@if [ -z "$(NEWEST_PYTHON)" ]; then \
		echo "test-newest: no pyenv CPython on this machine; skipped (CI's matrix covers it)"; \
	else \
		$(MAKE) --no-print-directory $(NEWEST_VENV)/.installed-test && \
		$(NEWEST_VENV)/bin/python -V && \
		timeout $(NEWEST_TIME_LIMIT) $(NEWEST_VENV)/bin/python -m pytest -q -p no:cacheprovider \
			-W error::DeprecationWarning $(PYTEST_ARGS); \
	fi

## test-all: `make test`, then the whole suite under the newest CPython (what .ci/run runs)
test-all: test test-newest

## lint: ruff (lint + format check), mypy strict and bandit (medium and high findings)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/bandit -r tasker_resilience -ll -q

## drill: an outage drill against a private server (or an in-process fault injector)
drill: $(STAMP)
	$(BIN)/tasker-resilience drill $(DRILL_ARGS)

## bench: the benchmark suite; writes bench/results.json and docs/benchmarks.md
bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(NEWEST_VENV) .venv-example build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache

# --- docs: the site and its API reference (mkdocs.yml), from the `docs` extra ----------
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[docs]'
	touch $@

.PHONY: docs
## docs: build the guides and the API reference from the docstrings (--strict: a warning fails)
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
