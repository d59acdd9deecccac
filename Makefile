# braincls: `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_VERSION ?= 3.11
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/uv/bin/uv)
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
DATA_ROOT ?= $(CURDIR)/data
DEMO_DIR ?= $(DATA_ROOT)/demo

# Keep every per-user folder inside the project and telemetry off.
export PREFECT_HOME ?= $(CURDIR)/.prefect
export KERAS_HOME ?= $(CURDIR)/.keras
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_LOGGING_EXTRA_LOGGERS := braincls
export TF_CPP_MIN_LOG_LEVEL := 2
# oneDNN kernels of TensorFlow 2.21 corrupt the heap when training braincls_resnet on CPU (see README).
export TF_ENABLE_ONEDNN_OPTS ?= 0
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export UV_PYTHON_DOWNLOADS ?= never

.PHONY: help setup demo test test-slow lint typecheck bench clean

help:
	@echo "make setup  - create/update .venv from uv.lock (no-op when current)"
	@echo "make demo   - set up, generate the demo data and run the whole pipeline offline"
	@echo "make test   - set up and run the test suite"
	@echo "make lint / typecheck / test-slow / bench"

$(UV):
	python3 -m venv $(CURDIR)/.tools/uv
	$(CURDIR)/.tools/uv/bin/pip install --quiet 'uv>=0.9'

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra cpu --python $(PYTHON_VERSION)
	@touch $@

setup: $(VENV)/.synced

demo: setup
	$(BIN)/braincls phantom --out $(DEMO_DIR)/phantom-images --n 1200 --seed 0
	$(BIN)/braincls run --images $(DEMO_DIR)/phantom-images --data-root $(DATA_ROOT) --epochs 12 --image-size 96

test: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check braincls tasks flows tests bench
	$(BIN)/ruff format --check braincls tasks flows tests bench

typecheck: setup
	$(BIN)/mypy braincls

bench: setup
	$(BIN)/python bench/seed_parity.py

clean:
	rm -rf $(VENV) .tools .prefect .keras
