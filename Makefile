# Two commands a new machine needs: `make drill` (the main job) and `make test`.
# Both create .venv on first use and install the package into it.
#
# Every tool (ruff, mypy, pytest and its plugins, build, twine, the workflow linters)
# and every dependency is installed at the version in requirements/dev.txt, a lock
# compiled by uv (`make lock`), so a release of a tool cannot turn a green checkout
# red. uv itself comes from PyPI at the version and hashes in requirements/uv.txt.
# pyproject.toml keeps ranges: the library's users resolve them, and `make
# test-lowest` / `make test-newest` run the suite at both ends of those ranges.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
STAMP  := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

LOCK        := requirements/dev.txt
LOWEST_LOCK := requirements/lowest.txt
# The interpreters come from this machine (pyenv, the distribution, setup-python in
# GitHub CI), never from a download of uv's own.
export UV_PYTHON_DOWNLOADS := never
export UV_NO_PROGRESS := 1

# UNPINNED=1: the newest release of everything the ranges allow, ignoring the lock
# (GitHub CI's weekly job: drift shows there, not as a red pull request).
ifeq ($(UNPINNED),1)
PIN := --upgrade
else
PIN := -c $(LOCK) --build-constraint $(LOCK)
endif
# The example project's tests (tests/test_example_project.py) install the built wheel
# into a venv of their own: with the same pins as the environment running them.
PIN_FOR_EXAMPLE = $(if $(filter 1,$(UNPINNED)),,TASKER_TEST_CONSTRAINTS=$(CURDIR)/$(1))

# Bounded: a hung test must not hold CI; one whole suite takes about 5 minutes here.
SUITE_TIME_LIMIT ?= 1800

.PHONY: test test-lowest test-newest test-all lint lint-workflows lock dist drill bench format clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ needed"'
	$(PYTHON) -m venv $(VENV)

$(UV): requirements/uv.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/uv.txt
	touch $@

$(STAMP): pyproject.toml $(LOCK) | $(UV)
	$(UV) pip install -q --python $(BIN)/python $(PIN) -e '.[test,lint,release,prometheus]'
	touch $@

$(BENCH_STAMP): $(STAMP)
	$(UV) pip install -q --python $(BIN)/python $(PIN) -e '.[bench]'
	touch $@

## test: the whole suite (unit, integration against a real server, fault drills)
test: $(STAMP)
	$(call PIN_FOR_EXAMPLE,$(LOCK)) $(BIN)/python -m pytest $(PYTEST_ARGS)

# The lowest and the newest CPython that pyenv has here and pyproject allows (3.10 and
# the newest 3.x); $(PYTHON) where pyenv is absent (GitHub CI sets both per job).
PYENV_PYTHONS = $(shell command -v pyenv >/dev/null 2>&1 && \
	pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[0-9]|[2-9][0-9])\.[0-9]+$$' | sort -V)
pyenv_python = $(if $(1),$(shell pyenv root)/versions/$(1)/bin/python,$(PYTHON))
LOWEST_PYTHON ?= $(call pyenv_python,$(firstword $(PYENV_PYTHONS)))
NEWEST_PYTHON ?= $(call pyenv_python,$(lastword $(PYENV_PYTHONS)))
LOWEST_VENV := .venv-lowest
NEWEST_VENV := .venv-newest

# A venv of another interpreter, with the package and the test tools at one lock's pins.
# $(1): venv, $(2): interpreter, $(3): uv's pinning options. The standard library's venv
# (it brings that interpreter's own pip, which the Django suite's fixture downloads with).
define other_venv
	rm -rf $(1)
	$(2) -m venv $(1)
	$(UV) pip install -q --python $(1)/bin/python $(3) -e '.[test,prometheus]'
endef

$(LOWEST_VENV)/.installed-test: pyproject.toml $(LOWEST_LOCK) | $(UV)
	$(call other_venv,$(LOWEST_VENV),$(LOWEST_PYTHON),-c $(LOWEST_LOCK) --build-constraint $(LOCK))
	touch $@

$(NEWEST_VENV)/.installed-test: pyproject.toml $(LOCK) | $(UV)
	$(call other_venv,$(NEWEST_VENV),$(NEWEST_PYTHON),$(PIN))
	touch $@

# The lowest/newest runs leave out the end-to-end timing scenarios (`-m scenario`: several
# worker processes, or a whole CLI drill, about 2 minutes a run): they exercise no
# dependency API the rest of the suite does not, and `make test` runs them. Without
# this, .ci/run's three runs take over 30 minutes here. VERSIONS_MARK= runs them too.
VERSIONS_MARK ?= not scenario
VERSIONS_PYTEST = $(if $(VERSIONS_MARK),-m "$(VERSIONS_MARK)")

## test-lowest: the suite under the lowest CPython, every runtime dependency (redis,
## pybreaker, dynaconf; Django for tasker_resilience.contrib) at the lowest version
## pyproject allows (requirements/lowest.txt); integration tests and drills included
test-lowest: $(LOWEST_VENV)/.installed-test
	@$(LOWEST_VENV)/bin/python -V
	@$(UV) pip freeze --python $(LOWEST_VENV)/bin/python | grep -iE '^(redis|pybreaker|dynaconf|django)=='
	$(call PIN_FOR_EXAMPLE,$(LOWEST_LOCK)) timeout $(SUITE_TIME_LIMIT) \
		$(LOWEST_VENV)/bin/python -m pytest $(VERSIONS_PYTEST) $(PYTEST_ARGS)

## test-newest: the suite under the newest CPython, the newest dependencies (the
## lock's, or the newest released with UNPINNED=1), DeprecationWarning as an error, so
## an API the next release removes fails here first
test-newest: $(NEWEST_VENV)/.installed-test
	@$(NEWEST_VENV)/bin/python -V
	$(call PIN_FOR_EXAMPLE,$(LOCK)) timeout $(SUITE_TIME_LIMIT) \
		$(NEWEST_VENV)/bin/python -m pytest -W error::DeprecationWarning $(VERSIONS_PYTEST) \
		$(PYTEST_ARGS)

## test-all: the suite three times: `make test`, test-lowest and test-newest
test-all: test test-lowest test-newest

## lint: ruff (lint + format check), mypy strict, bandit (medium and high findings),
## and the GitHub workflows
lint: $(STAMP) lint-workflows
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/bandit -r tasker_resilience -ll -q

# GitHub's workflow schema (check-jsonschema's vendored copy: no download) and zizmor's
# offline audits (unpinned actions and images, credentials left in checkouts, ...).
lint-workflows: $(STAMP)
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/zizmor --offline --no-progress .github/workflows

## lock: recompile requirements/*.txt from pyproject.toml (newest releases allowed;
## LOCK_ARGS= keeps the current pins where they still fit)
# Both locks are universal (one file for Python 3.10-3.14, markers where versions
# differ). The lowest lock: the lowest version of each runtime dependency pyproject
# allows (uv's lowest-direct resolution of the project alone), then the test
# environment around those, its tools at the newest versions that fit.
LOCK_ARGS ?= --upgrade
COMPILE = $(UV) pip compile -q --universal --python-version 3.10 $(LOCK_ARGS) pyproject.toml
lock: | $(UV)
	$(COMPILE) --extra test --extra lint --extra release --extra prometheus --extra bench \
		--extra docs --extra otel --extra typed -o $(LOCK)
	$(UV) pip compile -q --python-version 3.10 --resolution lowest-direct --no-deps \
		--no-header --no-annotate --extra django pyproject.toml -o $(VENV)/floors.txt
	$(COMPILE) --extra test --extra prometheus -c $(VENV)/floors.txt -o $(LOWEST_LOCK)
	$(UV) pip compile -q --generate-hashes requirements/uv.in -o requirements/uv.txt

## dist: build the sdist and the wheel, check them, install the wheel into a clean venv
## and run examples/quotes' own tests against it
DIST_VENV := .venv-dist
dist: $(STAMP)
	rm -rf dist $(DIST_VENV)
	# The build's own isolated environment gets the lock's setuptools too.
	PIP_CONSTRAINT=$(CURDIR)/$(LOCK) $(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*
	$(PYTHON) -m venv $(DIST_VENV)
	$(UV) pip install -q --python $(DIST_VENV)/bin/python $(PIN) "$$(ls dist/*.whl)[pytest]"
	$(BIN)/python .ci/check_dist.py --venv $(DIST_VENV) --dist dist --example examples/quotes

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
	rm -rf $(VENV) $(LOWEST_VENV) $(NEWEST_VENV) $(DIST_VENV) .venv-example build dist *.egg-info \
		.mypy_cache .ruff_cache .pytest_cache site

# --- docs: the site and its API reference (mkdocs.yml), from the `docs` extra ----------
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(UV) pip install -q --python $(BIN)/python $(PIN) -e '.[docs]'
	touch $@

.PHONY: docs
## docs: build the guides and the API reference from the docstrings (--strict: a warning fails)
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
