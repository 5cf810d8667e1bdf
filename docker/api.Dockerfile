# The online service (FastAPI + uvicorn) for backend=vllm: no torch, non-root, read-only-root friendly.
#
#   docker build -f docker/api.Dockerfile -t binllm-api .
#   docker run -p 8000:8000 -e BINLLM_BACKEND=vllm -e BINLLM_VLLM__BASE_URL=http://vllm:8000 \
#       -e BINLLM_STORE=redis -e BINLLM_REDIS_URL=redis://redis:6379/0 binllm-api
#
# Every setting is an environment variable of app/settings.py (BINLLM_*); WEB_CONCURRENCY sets uvicorn workers.
# Without a registry, scripts/container_smoke.sh builds a Debian + Python 3.11 base and passes
# --build-arg PYTHON_IMAGE=<that base>; the build needs BuildKit (DOCKER_BUILDKIT=1, or buildx).
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY docker/requirements-api.txt /tmp/requirements-api.txt
# --no-deps: the file is the whole closure (docker/pin_requirements.py); `pip check` below proves it.
RUN pip install --no-deps -r /tmp/requirements-api.txt
COPY pyproject.toml README.md ./
COPY app ./app
COPY model_store ./model_store
# The package itself, without re-resolving: every dependency is already pinned above.
RUN pip install --no-deps . && pip check

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="binllm-api" \
      org.opencontainers.image.description="BinLLM click-through prediction service (backend=vllm)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 binllm \
    && useradd --system --uid 10001 --gid binllm --no-create-home --home-dir /nonexistent binllm
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 docker/api-entrypoint.sh /usr/local/bin/binllm-api-entrypoint
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    WEB_CONCURRENCY=2 \
    BINLLM_BACKEND=vllm \
    BINLLM_SERVER__HOST=0.0.0.0
WORKDIR /srv
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["binllm-api-entrypoint"]
# uvicorn with the service's connection limits (app/server.py; BINLLM_SERVER__*, WEB_CONCURRENCY workers).
CMD ["python", "-m", "app.server"]
