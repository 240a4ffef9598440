# Quick start: `make demo` runs the pipeline on generated images, `make test` runs the tests.
# Both create .venv from the pinned lock file on first use and reuse it afterwards.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# TFX 1.16 declares Python < 3.11, but all of its compiled dependencies ship 3.11 wheels.
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check --ignore-requires-python
# The lock is installed with uv (pinned in requirements/installer.txt): the same wheels from the same index as pip,
# unpacked in parallel, about 20 s against pip's 2 minutes (docs/tests.md). uv reads only the lower bound of a
# package's Requires-Python, so TFX's "< 3.11" needs no flag there.
UV_INSTALL := $(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps

# Python writes each module's bytecode on its first import and every later process reads it: an environment that
# says PYTHONDONTWRITEBYTECODE would make every process (each CLI command, each Kubeflow task of the rehearsal)
# compile TensorFlow's and TFX's thousands of modules again.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-avx2 test-fast fuzz bench bench-quick bench-trainer bench-trial bench-looks bench-drift bench-tune bench-tune-small bench-scale lock clean setup installed system-packages

# No bytecode at install time (uv writes none unless asked): most of the lock's 23,000 modules are never imported; those
# that are get their bytecode written on first import (see `unexport PYTHONDONTWRITEBYTECODE` above).
CHECK_PYTHON := $(PYTHON) -c 'import sys; v = sys.version_info[:2]; assert v == (3, 11), f"Python 3.11 required, {sys.executable} is {v}"'
$(STAMP): requirements/lock.txt requirements/installer.txt setup.py
	@$(CHECK_PYTHON)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements/installer.txt
	$(UV_INSTALL) -r requirements/lock.txt
	$(UV_INSTALL) -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python pipeline_runner.py run --demo --output-dir runs/demo

# Test files run on TEST_WORKERS processes (a file's tests share one worker: the e2e files build
# one pipeline run per module); most of an e2e test's time is single-threaded TensorFlow start-up. The workers take
# the files in the order tests/conftest.py gives them, the slowest first (DIST). Three workers on two cores: two kept
# the cores 176-178% busy, a worker waiting the rest of the time on its subprocesses, a server or a poll.
TEST_WORKERS ?= 3
DIST := --dist=loadfile --no-loadscope-reorder

# Debian packages the tests use, installed when missing (apt, as root), in one apt run: Chromium opens the run
# report; MariaDB is the MySQL-protocol server under the Kubeflow rehearsal's ML Metadata service (the test
# starts a server of its own on a free port).
system-packages:
	@missing=""; command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v mariadbd >/dev/null || missing="$$missing mariadb-server"; \
	[ -z "$$missing" ] || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }

# The venv and the Debian packages install side by side (two jobs of a make of their own, unless the caller's make
# already runs jobs): apt waits on its downloads and dpkg on the disk while uv unpacks; 4-9 s less for both on a fresh
# clone (docs/tests.md), nothing to do once both are there.
# The Python check first, so that a wrong Python stops before apt starts; the caller's own -jN is kept.
setup:
	@$(CHECK_PYTHON)
	@$(MAKE) --no-print-directory $(if $(filter -j%,$(MAKEFLAGS)),,-j2) installed

installed: $(STAMP) system-packages
	@:

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest --numprocesses=$(TEST_WORKERS) $(DIST) --durations=15

# Everything, with the kernels an x86-64 CPU with AVX2 and no AVX-512 or VNNI (an AMD EPYC of Zen 2 or 3) runs by
# default, on any CPU with AVX2: TensorFlow turns oneDNN's kernels on by default only on CPUs with AVX512_VNNI,
# AVX512_BF16, AVX_VNNI or AMX, and runs Eigen's elsewhere, whose matrix products still call oneDNN's, which pick
# their code by the CPU; NumPy and its OpenBLAS pick theirs too. A learning test's margins move with those sums.
# TFLite's XNNPACK still picks by the CPU it runs on; the cores and caches move some sums too (docs/tests.md).
test-avx2:
	TF_ENABLE_ONEDNN_OPTS=0 ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES="$(NUMPY_AVX512)" $(MAKE) test
# NumPy's dispatch targets above AVX2 (`numpy.show_runtime()`); one the CPU lacks is ignored.
NUMPY_AVX512 := AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL

# The loop while developing: everything but the tests marked e2e (whole runs, Kubeflow packages under kfp's local
# runner, training in processes of their own, the image's install), on the same workers; 3-4 minutes on 2 cores (docs/tests.md).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not e2e" --numprocesses=$(TEST_WORKERS) $(DIST) --durations=10

# The fuzzing of tests/fuzz at 25 times the inputs `make test` tries, with a new random seed each time (about 15
# minutes on one core); --hypothesis-show-statistics prints what the inputs came to.
fuzz: $(STAMP)
	FUZZ_EXAMPLES_SCALE=25 FUZZ_RANDOM=1 $(BIN)/python -m pytest tests/fuzz --hypothesis-show-statistics

# Benchmarks print a table and write JSON (runs/benchmarks.json); full: the training section about 16 minutes on 2 cores, the rest about 2,
# and the traffic sink's section about 1.5.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.suite

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.suite --quick

# The training section alone (about 6 minutes on 2 cores): its figures replace that section's in runs/benchmarks.json.
bench-trainer: $(STAMP)
	$(BIN)/python -m benchmarks.trainer

# One trial of `run --tune` against the Trainer's training on section 1's images (median of 3, alternating;
# benchmarks/trial_cost.py): the trial must cost at most a quarter. Its figure replaces its own in runs/benchmarks.json.
bench-trial: $(STAMP)
	$(BIN)/python -m benchmarks.trial_cost

# The from-scratch schedule's settings across the generated looks: chosen on three, reported on four never tuned
# on (benchmarks/looks.py; 3 seeds of a setting take 10-23 minutes on the faster 2-core machine measured, cached views
# the least and 24 epochs the most, about twice that on the slower; figures in runs/looks.json, a cut-short run goes on).
bench-looks: $(STAMP)
	$(BIN)/python -m benchmarks.looks

# `monitor` over 10,000 images, how often it alarms on each generated look, and its peak memory over windows of
# 200 and 2,000 large JPEGs (benchmarks/drift.py; figures in runs/drift.json and docs/performance.md).
bench-drift: $(STAMP)
	$(BIN)/python -m benchmarks.drift

# The search of `run --tune` on each held-out look's own train and validation images against the default schedule,
# scored on the look's test images, paired over seeds (benchmarks/tuning.py; figures in runs/tuning.json). The full
# protocol (4 looks, 3 seeds, 8 trials) takes hours on 2 cores; bench-tune-small (2 looks, 3 seeds, 2 trials, 64 px,
# short phases) minutes.
bench-tune: $(STAMP)
	$(BIN)/python -m benchmarks.tuning

bench-tune-small: $(STAMP)
	$(BIN)/python -m benchmarks.tuning --small

# The whole run, folder to push, at 2,500, 10,000 and 25,000 photo-sized images against the plain Keras script's
# training alone (benchmarks/scale.py; hours on 2 cores: each size's figures go to runs/scale.json as it ends).
# IMAGES picks the sizes: make bench-scale IMAGES="2500 10000".
IMAGES ?= 2500 10000 25000
bench-scale: $(STAMP)
	$(BIN)/python -m benchmarks.scale --images $(IMAGES)

# Re-resolve the pinned set from the direct requirements and the constraints.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --ignore-requires-python -c requirements/constraints.txt -r requirements/base.in
	{ head -2 requirements/lock.txt; .venv-lock/bin/pip freeze; } > requirements/lock.txt.new
	mv requirements/lock.txt.new requirements/lock.txt && rm -rf .venv-lock

# What the project itself writes, by name: the venv, the demo's root and the benchmarks' figures. A root of the user's
# own under runs/ (the README's runs/pets) holds its models, store and labeled queues, and any other file there may be
# the user's: never removed here (nor the benchmarks' pretrained bases in runs/pretrained/, minutes each to make).
BENCHMARK_FIGURES := benchmarks.json drift.json looks.json looks.json.partial scale.json scale-logs tuning.json \
	test-cpu.jsonl
clean:
	rm -rf $(VENV) runs/demo $(addprefix runs/,$(BENCHMARK_FIGURES))
