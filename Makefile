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
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export UV_PYTHON_DOWNLOADS ?= never

.PHONY: help setup demo test test-slow test-all lint typecheck bench clean server deploy worker test-ops

help:
	@echo "make setup  - create/update .venv from uv.lock (no-op when current)"
	@echo "make demo   - set up, generate the demo data and run the whole pipeline offline"
	@echo "make test   - set up and run the default test tier (unit and fast integration tests)"
	@echo "make test-slow / test-ops / test-all - the heavy tier, the operations test, all tiers"
	@echo "make lint / typecheck / bench"
	@echo "make server / deploy / worker - local Prefect server (127.0.0.1:4200), setup + deployments, workers"
	@echo "make test-ops - only the operations test (real server, worker, deployments, dashboard in Chromium)"

$(UV):
	python3 -m venv $(CURDIR)/.tools/uv
	$(CURDIR)/.tools/uv/bin/pip install --quiet 'uv>=0.9'

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra cpu --python $(PYTHON_VERSION)
	@touch $@

setup: $(VENV)/.synced

# The main job offline: a phantom DICOM collection served by the local NBIA server on a free
# loopback port, ingested over HTTP, converted, validated, trained, evaluated and registered.
demo: setup
	$(BIN)/braincls demo --data-root $(DATA_ROOT)

PYTEST := $(BIN)/python -m pytest --durations=25

test: setup
	$(PYTEST) -m "not slow and not ops" $(PYTEST_ARGS)

test-slow: setup
	$(PYTEST) -m "slow and not ops" $(PYTEST_ARGS)

# Every tier, as CI runs it.
test-all: setup
	$(PYTEST) $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check braincls tasks flows tests bench
	$(BIN)/ruff format --check braincls tasks flows tests bench

typecheck: setup
	$(BIN)/mypy braincls

bench: setup
	$(BIN)/python bench/seed_parity.py

clean:
	rm -rf $(VENV) .tools .prefect .keras

# ---------------------------------------------------------------- operations (README: "Operating braincls on Prefect")
PREFECT_PORT ?= 4200
PREFECT_API ?= http://127.0.0.1:$(PREFECT_PORT)/api
# The dashboard's address as its users reach it: links in failure notifications point there.
PREFECT_UI ?= http://127.0.0.1:$(PREFECT_PORT)
# The server keeps its own database, apart from the temporary one `make demo` and the CLI use.
PREFECT_SERVER_HOME ?= $(CURDIR)/.prefect/server
WORKER_POOLS ?= cpu gpu
TCIA_LIMIT ?= 2

server: setup
	@mkdir -p $(PREFECT_SERVER_HOME)
	PREFECT_HOME=$(PREFECT_SERVER_HOME) PREFECT_UI_URL=$(PREFECT_UI) PREFECT_UI_API_URL=$(PREFECT_API) \
	  $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT) --analytics-off

deploy: setup
	PREFECT_API_URL=$(PREFECT_API) $(BIN)/braincls setup --tcia-limit $(TCIA_LIMIT) $(if $(WEBHOOK_URL),--webhook-url '$(WEBHOOK_URL)')
	cd $(CURDIR) && BRAINCLS_PROJECT_ROOT=$(CURDIR) PREFECT_API_URL=$(PREFECT_API) $(BIN)/prefect --no-prompt deploy --all

# One process worker per pool, in the foreground; Ctrl-C stops them all. (Job control on, so
# the workers do not start with SIGINT ignored and can shut down gracefully.)
worker: setup
	@set -m; pids=""; \
	for pool in $(WORKER_POOLS); do \
	  PREFECT_API_URL=$(PREFECT_API) $(BIN)/prefect worker start --pool $$pool --type process & \
	  pids="$$pids $$!"; \
	done; \
	trap 'kill $$pids 2>/dev/null' INT TERM EXIT; \
	wait

test-ops: setup
	$(PYTEST) -m ops $(PYTEST_ARGS)
