# segpipe: `make demo` runs the main job on a sample; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segpipe-installed
DEMO := data/demo

.PHONY: setup test test-slow test-isa lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

# Every test has a time limit (pytest-timeout), so CI can never hang: a test past it fails with
# every thread's stack and ends the run (thread method: it fires even inside C code).
PYTEST := PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 $(PY) -m pytest --timeout-method=thread

# The default suite (under 15 minutes on 2 cores; no test should take 20 s); CI then runs the
# slow set too.
test: lint
	$(PYTEST) -m "not slow" --timeout 300

# The slow set: about 18 minutes on 2 cores (106 tests); its slowest take a few minutes.
test-slow: setup
	$(PYTEST) -m slow --timeout 900

# The exactness contract on kernels other than the machine's best: the tests that compare tiled,
# batched, re-laid-out or re-exported logits and labels with the whole image, again with a lower
# instruction set forced on ATen and oneDNN (ISA=sse41, the default, is below every x86-64 CI
# machine's own; ISA=avx2 where the machine has AVX-512).
ISA ?= sse41
ATEN_ISA_sse41 := default
ONEDNN_ISA_sse41 := SSE41
ATEN_ISA_avx2 := avx2
ONEDNN_ISA_avx2 := AVX2
ISA_TESTS := tests/pipeline/test_exactness.py tests/pipeline/test_batches.py \
	tests/pipeline/test_backends.py tests/pipeline/test_parity_nets.py \
	tests/pipeline/test_cardless_models.py tests/models/test_segnet.py \
	tests/models/test_model_loading.py
test-isa: setup
	test -n "$(ATEN_ISA_$(ISA))" || { echo "ISA=$(ISA): use sse41 or avx2"; exit 2; }
	ATEN_CPU_CAPABILITY=$(ATEN_ISA_$(ISA)) ONEDNN_MAX_CPU_ISA=$(ONEDNN_ISA_$(ISA)) $(PY) -c \
		"import torch; print('ATen kernels:', torch.backends.cpu.get_cpu_capability())"
	ATEN_CPU_CAPABILITY=$(ATEN_ISA_$(ISA)) ONEDNN_MAX_CPU_ISA=$(ONEDNN_ISA_$(ISA)) \
		$(PYTEST) -m "not slow" --timeout 300 $(ISA_TESTS)

demo: setup
	$(PY) scripts/fetch_samples.py data/samples
	$(PY) scripts/demo.py data/samples $(DEMO)

BENCH_STAMP := $(VENV)/.segpipe-bench-installed

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'
	touch $(BENCH_STAMP)

# Throughput, start-up, memory, the scaling curve, then issue 17's I/O-limit comparison
# (benchmarks/iolimit.py); BENCHMARKS.md. About an hour on 2 quiet cores (5 repetitions).
# BENCH_ARGS=--quick: tiny images, one repetition (a smoke test, not a measurement);
# --gigapixel adds the 1 GP point, --compile --backend compile; --no-iolimit skips the comparison.
bench: $(BENCH_STAMP)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# Issue 17's CPU targets side by side, a verdict each (benchmarks/targets.py): 3-5 interleaved
# repetitions, about 20 minutes on 2 quiet cores (capped at 24); results/targets.json and .md.
# TARGETS_ARGS=--smoke: tiny images, one repetition (~2 min; checks the script, measures nothing).
.PHONY: bench-targets
bench-targets: $(BENCH_STAMP)
	$(PY) benchmarks/targets.py $(TARGETS_ARGS)

clean:
	rm -rf $(DEMO) .pytest_cache .mypy_cache
