# segpipe: `make demo` runs the main job on a sample; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segpipe-installed
DEMO := data/demo

.PHONY: setup test test-slow lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

# The default suite (under 15 minutes on 2 cores); CI then runs the slow set too.
test: lint
	PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 $(PY) -m pytest -m "not slow"

test-slow: setup
	PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 $(PY) -m pytest -m slow

demo: setup
	$(PY) scripts/fetch_samples.py data/samples
	$(PY) scripts/demo.py data/samples $(DEMO)

BENCH_STAMP := $(VENV)/.segpipe-bench-installed

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Throughput, start-up, memory and the scaling curve (BENCHMARKS.md); ~25 min on 2 cores.
# BENCH_ARGS=--quick: smaller images, one repetition (~5 min); --gigapixel adds the 1 GP point.
bench: $(BENCH_STAMP)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(DEMO) .pytest_cache .mypy_cache
