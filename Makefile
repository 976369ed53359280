# One command to set up and run a benchmark cell, one to set up and test.
# Targets create .venv and install into it when needed (re-installs when pyproject.toml changes).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# TORCH_SPEC=torch takes the newest release.
TORCH_SPEC ?= torch==2.13.0
# Where torch comes from: PyPI (whose Linux wheels are the CUDA build) where `nvidia-smi -L` lists
# a GPU, else the small CPU build (from the default index when that index does not answer).
# Set it for another build, e.g. one for an older NVIDIA driver:
# `make setup TORCH_INDEX=https://download.pytorch.org/whl/cu<version>`.
TORCH_INDEX ?= $(if $(shell nvidia-smi -L 2>/dev/null | grep '^GPU'),,https://download.pytorch.org/whl/cpu)
CHECK_ARGS ?=
# `make server`: the tracking server for many writers (README, "On a cluster").
HOST       ?= 127.0.0.1
PORT       ?= 5000
SERVER_DIR ?= $(CURDIR)/results/server
SERVER_ARGS ?=
STAMP  := $(VENV)/.installed
export MLFLOW_DISABLE_TELEMETRY ?= true

.PHONY: setup bench test ui ui-check server slurm-test report check lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) --retries 1 --timeout 20) "$(TORCH_SPEC)" \
		|| { echo "make setup: $(TORCH_INDEX) did not answer; installing $(TORCH_SPEC) from the default index"; \
		     $(BIN)/pip install -q "$(TORCH_SPEC)"; }
	$(BIN)/pip install -q -e ".[dev,launchers,ray]"
	touch $(STAMP)

bench: setup
	$(BIN)/bench +method=pinn +problem=burgers

test: setup
	$(BIN)/pytest -q

ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/results/mlflow.db \
		--default-artifact-root $(CURDIR)/results/mlartifacts --port 5000

# `make ui`'s runs table and chart view in headless Chromium (needs `chromium` on PATH), on a
# small grid in results/ui-check/ (made when missing); checked, with screenshots there.
ui-check: setup
	$(BIN)/python scripts/ui_check.py --grid --store $(CURDIR)/results/ui-check/mlflow.db \
		--out $(CURDIR)/results/ui-check

# One process owns the store (a SQLite file on this host's local disk) and serves the
# artifacts, so jobs anywhere write over HTTP and none opens the database itself.
# For a cluster: HOST=0.0.0.0, and SERVER_ARGS="--allowed-hosts <this-host>:$(PORT)" when jobs
# use the host's name (MLflow answers localhost and private IPs by default).
server: setup
	mkdir -p $(SERVER_DIR)
	$(BIN)/mlflow server --host $(HOST) --port $(PORT) \
		--backend-store-uri sqlite:///$(abspath $(SERVER_DIR))/mlflow.db \
		--artifacts-destination $(abspath $(SERVER_DIR))/mlartifacts $(SERVER_ARGS)

# Opt-in, as root: a single-node SLURM on this host and a 4-job grid through it.
slurm-test: setup
	VENV=$(VENV) scripts/slurm_test.sh

report: setup
	$(BIN)/bench-report

check: setup
	$(BIN)/bench-check $(CHECK_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/ci.yml

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) outputs multirun results/cache results/check
