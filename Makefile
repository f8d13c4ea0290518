# `make demo` and `make test` set everything up on a fresh machine and are fast once set up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
DEMO_DIR ?= .latentscape/demo
PYTEST_ARGS ?=
# Two pytest workers, one test file each at a time: a file's tests share fixtures and
# some run in order (test_team.py's crash tests restart its server last).
TEST_WORKERS ?= 2

.PHONY: demo test test-core bench ui browser wordnet clean

# The venv is rebuilt only when the dependencies change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	# Compile UMAP's numba code into numba's disk cache once, so no first map pays it.
	$(BIN)/python -m latentscape.jobs.precompile
	touch $(STAMP)

# Debian's chromium for the browser tests (never a browser download).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# WordNet 3.0 from Debian: the second real data set (--data wordnet) the tests check verdicts on.
wordnet:
	@test -f /usr/share/wordnet/data.noun || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wordnet-base >/dev/null; }

test: $(STAMP) browser wordnet
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS)  # the slowest tests: the suite must stay under 15 min on 2 cores

# The pure code alone (no store, no model, no server): the loop to run while editing jobs/core.
test-core: $(STAMP)
	$(BIN)/python -m pytest -q tests/core

demo: $(STAMP)
	mkdir -p $(DEMO_DIR)
	cd $(DEMO_DIR) && $(CURDIR)/$(BIN)/latentscape demo

ui: $(STAMP)
	cd $(DEMO_DIR) && $(CURDIR)/$(BIN)/latentscape ui

bench: $(STAMP) wordnet
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .latentscape
