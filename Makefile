# mlfleet — the two commands: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
TRITON_ENV := .venv-triton
UV := $(VENV)/bin/uv
export UV_LINK_MODE := copy
# Write bytecode at install time: where PYTHONDONTWRITEBYTECODE is set (as on the CI machine) every service
# process would otherwise recompile Feast, pandas and the rest on each start.
export UV_COMPILE_BYTECODE := 1

.PHONY: install demo up test results chaos bench bench-rollback lab triton-delay clean

install: $(VENV)/.installed $(TRITON_ENV)/.installed

$(UV):
	@echo "==> creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv

$(VENV)/.installed: pyproject.toml | $(UV)
	@echo "==> installing mlfleet and its test tools into $(VENV)"
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet -e '.[test]'
	@touch $@

$(TRITON_ENV)/.installed: deploy/triton/requirements.txt | $(UV)
	@echo "==> installing the Triton runtime into $(TRITON_ENV)"
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(TRITON_ENV)
	VIRTUAL_ENV=$(TRITON_ENV) $(UV) pip install --quiet -r deploy/triton/requirements.txt
	@touch $@

demo: install
	$(VENV)/bin/mlfleet demo

up: install
	$(VENV)/bin/mlfleet up

# TEST_WORKERS=2: two pytest-xdist workers, each file's tests in one of them (its module fixtures started once). On
# 2 cores that took the suite from ~10.5 to ~8 minutes, but rollout verdicts judge real latencies, and with a second
# worker loading the cores the demo's healthy canary was once judged slower and rolled back: one process by default.
TEST_WORKERS ?= 0
test: install
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The test suite, writing the figures it measures where the README quotes them (benchmarks/results:
# reliability.json, monitor-drift.json, dashboard.png); `make test` writes them to a temporary folder.
results: install
	MLFLEET_RESULTS_DIR=benchmarks/results $(VENV)/bin/python -m pytest

# schemathesis with many more examples per operation than `make test` (a few minutes), then a
# 10-minute soak of the whole fleet (benchmarks/soak.py); both write benchmarks/results/reliability.json.
CHAOS_FUZZ_EXAMPLES ?= 100
chaos: install
	MLFLEET_RESULTS_DIR=benchmarks/results MLFLEET_FUZZ_EXAMPLES=$(CHAOS_FUZZ_EXAMPLES) $(VENV)/bin/python -m pytest tests/reliability/test_api_fuzzing.py --timeout 1800
	$(VENV)/bin/python -m benchmarks.soak

$(VENV)/.bench-installed: $(VENV)/.installed
	@echo "==> installing the benchmark's chart library into $(VENV)"
	VIRTUAL_ENV=$(VENV) $(UV) pip install --quiet -e '.[test,bench]'
	@touch $@

bench: install $(VENV)/.bench-installed
	$(VENV)/bin/python -m benchmarks.bench

bench-rollback: install
	$(VENV)/bin/python -m benchmarks.rollback

# Two gateways on one fleet, loaded in turn (benchmarks/lab.py): this checkout's against BASELINE (a git ref)
# and/or this checkout with LAB_ENV settings, e.g. make lab BASELINE=HEAD~1, make lab LAB_ENV="MLFLEET_GATEWAY_BATCH_MAX_IN_FLIGHT=2";
# LAB_ROWS=32 sends 32 instances per request.
lab: install
	$(VENV)/bin/python -m benchmarks.lab $(if $(BASELINE),--baseline $(BASELINE)) $(if $(LAB_ENV),--env $(LAB_ENV)) $(if $(LAB_ROWS),--rows $(LAB_ROWS))

# Triton's dynamic-batching delay for the Python backend, swept straight against Triton at 1 and 16 connections
# (benchmarks/triton_delay.py): the registry's PYTHON_BACKEND_QUEUE_DELAY_US comes from such a run.
TRITON_DELAYS ?= 0 50 100
triton-delay: install
	$(VENV)/bin/python -m benchmarks.triton_delay $(TRITON_DELAYS)

clean:
	rm -rf $(VENV) $(TRITON_ENV) .mlfleet
