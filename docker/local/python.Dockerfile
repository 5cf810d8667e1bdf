# Debian bookworm + its Python 3.11, for machines that cannot pull python:3.11.*-slim-bookworm: the base that
# scripts/container_smoke.sh passes to the API and job Dockerfiles as PYTHON_IMAGE. DEBIAN_IMAGE is a
# debootstrap'ed bookworm (minbase) imported by that script; the official slim image puts python on PATH the
# same way (python, python -m venv).
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 \
    && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
