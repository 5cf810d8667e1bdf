# The offline job (`binllm`: data, codes, LoRA tuning, export, publish) with torch, transformers and peft.
# The same image serves the embedded backend (BINLLM_BACKEND=local) for the compose `cpu` profile.
#
#   docker build -f docker/job.Dockerfile -t binllm-job .                              # CPU torch
#   docker build -f docker/job.Dockerfile --build-arg TORCH_VARIANT=cu128 -t binllm-job:cuda .
#
# Both images need BuildKit (DOCKER_BUILDKIT=1, or buildx): it reads <Dockerfile>.dockerignore and RUN --mount.
# Without a registry, scripts/container_smoke.sh builds a Debian + Python 3.11 base and passes
# --build-arg PYTHON_IMAGE=<that base>.
#   docker run --rm -v "$PWD/artifacts:/artifacts" binllm-job codes train --help
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# cpu, or a CUDA build tag of the PyTorch index (cu126, cu128, ...); the wheels carry their CUDA runtime.
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# torch comes from the PyTorch index of the variant. Where that index is out of reach, put a torch wheel in
# docker/wheels/ and pass --build-arg TORCH_INDEX_URL=https://pypi.org/simple --build-arg TORCH_VERSION=X+cpu
# (scripts/container_smoke.sh does this); the other dependencies still come from the index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
RUN --mount=type=bind,source=docker/wheels,target=/wheels \
    pip install --index-url "${TORCH_INDEX_URL}" --find-links /wheels "torch==${TORCH_VERSION}"
COPY docker/requirements-api.txt docker/requirements-job.txt /tmp/
# --no-deps: the files are the whole closure (docker/pin_requirements.py); `pip check` below proves it.
RUN pip install --no-deps -r /tmp/requirements-job.txt
COPY pyproject.toml README.md ./
COPY app ./app
COPY model_store ./model_store
RUN pip install --no-deps . && pip check

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="binllm-job" \
      org.opencontainers.image.description="BinLLM offline job: codes, LoRA tuning, export, publish" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 binllm \
    && useradd --system --uid 10001 --gid binllm --create-home --home-dir /home/binllm binllm
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 docker/api-entrypoint.sh /usr/local/bin/binllm-api-entrypoint
# No model hub at run time: every model comes from a mounted directory.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
WORKDIR /work
USER 10001:10001
ENTRYPOINT ["binllm"]
CMD ["--help"]
