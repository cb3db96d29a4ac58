# segpipe: `make demo` runs the main job on a sample; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segpipe-installed
DEMO := data/demo

.PHONY: setup test lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

test: lint
	PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 $(PY) -m pytest

demo: setup
	$(PY) scripts/make_demo.py $(DEMO)
	$(VENV)/bin/segpipe run --input $(DEMO)/scene.tif --model $(DEMO)/unet.pt \
		--output $(DEMO)/mask.tif --overwrite --summary $(DEMO)/summary.json
	$(PY) -c "import json; s = json.load(open('$(DEMO)/summary.json')); \
		print('\n'.join(f\"{c['name']:>12}: {c.get('area', 0) / 1e4:10.1f} ha\" for c in s['classes']))"

bench: setup
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/memory.py

clean:
	rm -rf $(DEMO) .pytest_cache .mypy_cache
