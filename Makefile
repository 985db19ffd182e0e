# Two commands do all set-up on a fresh machine:
#   make demo   builds the embedded default zoo (digits_seed) with its twins into ./stores
#   make test   runs the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
JOBS ?= 2
# demo: one engine per core, at most 4 (the embedded zoo has 16 models)
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the pinned CPU wheel first, so that nothing pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# The test run also installs the optional extras whose packages consume our data (nfn,
# torch-geometric) and Ray, so that their tests run; where Ray cannot be installed its test is
# skipped with its reason.
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[dev,nfn,graph]"
	$(PY) -m pip install --quiet -e ".[dev,ray]" || echo "Ray could not be installed: its test will be skipped"
	touch $@

# Tests whose results come from training: run again with two torch threads and without AVX kernels
NUMERIC_TESTS := tests/test_engine.py tests/test_vd.py tests/test_mp.py tests/test_methods.py tests/test_build.py \
                 tests/test_resume_chunks.py tests/test_workers.py::test_two_worker_build_equals_a_local_build

.PHONY: install demo test test-matrix lint
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/zoo-build --zoo digits_seed --root stores --resume --workers $(WORKERS)

test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n $(JOBS) --durations=15

test-matrix: $(VENV)/.installed-test
	# two threads in one test process: two processes of two threads spin against each other on
	# 2 cores (413 s instead of 82 s)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -n 1 $(NUMERIC_TESTS)
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -q -n $(JOBS) $(NUMERIC_TESTS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
