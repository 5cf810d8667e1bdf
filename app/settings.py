"""Service settings, read from environment variables with the prefix BINLLM_ (nested groups use "__").

    BINLLM_BACKEND=vllm BINLLM_VLLM__BASE_URL=http://localhost:8001 BINLLM_REDIS_URL=redis://localhost:6379/0 \
        uvicorn app.main:app

With no variables set the service runs the embedded default: the in-process (local) backend reading a
snapshot directory.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SNAPSHOT_DIR = Path("artifacts/demo/snapshot")
DEFAULT_LOCAL_MODEL_DIR = Path("artifacts/demo/model")
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_POOL_WAIT_S = 2.0


class VllmSettings(BaseModel):
    """How to reach a vLLM OpenAI-compatible server."""

    base_url: str | None = Field(
        default=None,
        description="e.g. http://vllm:8000, or several replicas comma-separated (each user prefix goes to one "
        "replica by consistent hashing, app/scorers/routing.py); required for backend=vllm.",
    )
    resolve_replicas: bool = Field(
        default=False,
        description="base_url's host names every replica (a Kubernetes headless Service): route over all its "
        "addresses, looked up again every 10 s.",
    )
    mode: Literal["classify", "completions"] = Field(
        default="classify",
        description="'classify': the pooling classifier (POST /classify); 'completions': a generator "
        "(POST /v1/completions with logprobs of the Yes/No tokens).",
    )
    model: str | None = Field(
        default=None, description="Served model name; defaults to the server's only model."
    )
    api_key: SecretStr | None = Field(default=None, description="Bearer token, if the server wants one.")
    timeout_s: float = Field(default=10.0, gt=0, description="Per-request timeout to vLLM, seconds.")
    connect_timeout_s: float = Field(default=1.0, gt=0, description="Connect timeout to vLLM, seconds.")
    max_retries: int = Field(default=2, ge=0, le=5, description="Retries on connection errors and 5xx.")
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Connection pool size to each vLLM replica; None = derived from "
        "server.limit_concurrency (`pool_size`).",
    )


class LocalSettings(BaseModel):
    """The in-process scorer (embedded default)."""

    model_dir: Path = Field(default=DEFAULT_LOCAL_MODEL_DIR, description="A servable model directory.")
    max_batch_prompts: int = Field(default=256, ge=1, description="Micro-batch limit, in prompts.")
    small_job_prompts: int = Field(
        default=4,
        ge=0,
        description="Jobs of at most this many prompts are scored first, in a call of their own, when a "
        "micro-batch also holds larger jobs (so a 1-candidate request does not wait for large chunks); "
        "0 = one call per micro-batch.",
    )
    batch_wait_ms: float = Field(default=2.0, ge=0, description="How long to gather concurrent requests.")
    threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads; None = torch default."
    )
    dtype: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        default="auto",
        description="What runs the weights. auto = bf16 where the hardware multiplies it natively (CUDA, CPUs "
        "with AVX512-BF16 or AMX), else fp32 (emulated bf16 is slower than fp32); int8 = the decoder's linear "
        "layers in int8, activations quantized per token (CPU only, for CPUs without native bf16). What bf16 and int8 do to "
        "AUC/UAUC is measured by bench/bf16_quality.py (paired bootstrap on ML-1M valid, README). The Yes/No "
        "margin and sigmoid stay fp32 either way.",
    )
    prefix_cache_mb: int = Field(
        default=256,
        ge=0,
        description="Memory for the key/value states of recently scored user prefixes, so a request's later "
        "chunks (and the same user's next request) skip the prefix pass; ~4.4 MB per user for SmolLM2 in "
        "bf16; 0 = off.",
    )
    chunk_candidates: int | None = Field(
        default=32,
        ge=1,
        description="Candidates per model call: a request is scored chunk by chunk, so small requests "
        "queued behind a large one wait one chunk, and an abandoned request stops at the next chunk; "
        "None = the whole request in one call.",
    )


class ServerSettings(BaseModel):
    """How `python -m app.server` runs uvicorn: address, workers and the limits that keep slow or greedy
    clients from holding the server."""

    host: str = Field(default="127.0.0.1", description="Address to listen on (0.0.0.0 in containers).")
    port: int = Field(default=8000, ge=1, le=65535, description="Port to listen on.")
    workers: int = Field(
        default_factory=lambda: int(os.environ.get("WEB_CONCURRENCY", "1")),
        ge=1,
        description="uvicorn worker processes (default: $WEB_CONCURRENCY, else 1).",
    )
    limit_concurrency: int = Field(
        default=512,
        ge=1,
        description="Open connections + requests per worker beyond which uvicorn answers 503.",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Each request's headers must be complete within this (of the connection opening, or of "
        "the request's first byte on a kept-alive connection), else the connection is closed.",
    )
    body_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A request's whole body must arrive within this of its headers (else 408, connection closed).",
    )
    timeout_keep_alive_s: int = Field(
        default=5, ge=1, description="Idle keep-alive connections close after it."
    )
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, description="Largest request line + headers, bytes (larger: 400)."
    )
    backlog: int = Field(default=2048, ge=1, description="Pending TCP connections the kernel queues.")
    timeout_graceful_shutdown_s: int = Field(
        default=20, ge=1, description="On shutdown, how long in-flight requests may finish."
    )
    proxy_headers: bool = Field(
        default=False, description="Trust X-Forwarded-* from a proxy in front (containers behind one)."
    )


class ServiceSettings(BaseSettings):
    """Every knob of the online service."""

    model_config = SettingsConfigDict(env_prefix="BINLLM_", env_nested_delimiter="__", extra="ignore")

    backend: Literal["local", "vllm", "instant"] = Field(
        default="local",
        description="'local' in-process model, 'vllm' remote server; 'instant' answers at once and exists "
        "only for bench/service_overhead.py.",
    )
    store: Literal["directory", "redis"] = Field(
        default="directory", description="Where published snapshots are read from."
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="redis://host:port/db, or redis+cluster://host:port for a cluster; required for store=redis.",
    )
    redis_cluster: bool = Field(
        default=False,
        description="BINLLM_REDIS_URL names a node of a Redis Cluster (as does a redis+cluster:// URL).",
    )
    redis_namespace: str = Field(default="binllm", description="Key prefix of published snapshots.")
    redis_max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Redis connection pool size per worker; None = derived from server.limit_concurrency "
        "(`pool_size`).",
    )
    redis_verify_max_keys: int = Field(
        default=200_000,
        ge=0,
        description="A newly active Redis version is read whole and checked (every entry, the counts) before "
        "it is served while the database holds at most this many keys; above it each entry is checked as "
        "requests read it. Either way a bad version is refused and the last verified one keeps serving.",
    )
    pool_wait_s: float | None = Field(
        default=None,
        gt=0,
        description="Most time a request waits for a pooled Redis or vLLM connection when every one is in "
        "use; past it, 503 `overloaded` + Retry-After. None = derived: 2 s, or half of deadline_s when that is "
        "shorter; an explicit value must be below deadline_s.",
    )
    redis_timeout_s: float = Field(
        default=1.0, gt=0, description="Redis connect and per-command timeout, seconds."
    )
    redis_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Single Redis: retries of a call that failed on a dead connection (Redis restarted), each "
        "on a fresh connection with exponential backoff; timeouts are not retried. A cluster retries for "
        "redis_failover_s instead.",
    )
    redis_failover_s: float = Field(
        default=6.0,
        ge=0,
        le=60,
        description="Redis Cluster only: how long a call keeps retrying while a primary fails over (its "
        "replica takes over after cluster-node-timeout plus an election), refreshing the slot table, with "
        "exponential backoff capped at 0.5 s; only then 503. Kept below half of deadline_s. 0 = no retries.",
    )
    redis_health_check_s: float = Field(
        default=5.0,
        ge=0,
        description="A pooled Redis connection idle this long is PINGed before use; 0 = never.",
    )
    snapshot_dir: Path = Field(default=DEFAULT_SNAPSHOT_DIR, description="Root of directory snapshots.")
    max_candidates: int = Field(default=256, ge=1, le=4096, description="Most item_ids in one request.")
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        description="Largest request body accepted, bytes; a larger one gets 413 before it is read.",
    )
    max_queued_candidates: int | None = Field(
        default=1024,
        ge=1,
        description="Most candidates admitted (queued or being scored) per process; a request beyond it "
        "gets 503 + Retry-After at once (load shedding). None = no cap.",
    )
    deadline_s: float | None = Field(
        default=30.0,
        gt=0,
        description="Time the backend gets to score one request, seconds; past it the answer is the "
        "code-only fallback (degraded 'llm_deadline'), or 504 + Retry-After with the fallback off. "
        "None = no deadline.",
    )
    cascade_safety: float = Field(
        default=0.75,
        gt=0,
        le=1,
        description="Share of the time left before the deadline the LLM is planned to fill: it scores the "
        "candidates with the best code scores, chunk by chunk, while the next chunk is expected (from measured "
        "throughput) to finish within this share; the rest keep their code score ('llm_partial').",
    )
    item_cache_size: int = Field(default=100_000, ge=0, description="In-process item cache entries; 0 = off.")
    api_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated bearer tokens; when set, POST /predict needs "
        "'Authorization: Bearer <one of them>' (401 otherwise). Health and metrics stay open. Unset = no auth; "
        "set but holding no key ('', ',') is refused at start-up.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve /metrics on this port of the server's host instead (e.g. kept off the public "
        "ingress); the main port's /metrics then answers 404. None = on the main port.",
    )
    readiness_timeout_s: float = Field(
        default=1.0,
        gt=0,
        description="Most time each /readyz check (store, backend probe) may take; past it, not ready.",
    )
    fallback: bool = Field(
        default=True,
        description="When the LLM backend is down, erroring or past the deadline, answer 200 with the "
        "code-only score published with the snapshot, marked `degraded`; false = 503 as before.",
    )
    vllm: VllmSettings = Field(default_factory=VllmSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)

    @model_validator(mode="after")
    def _refuse_inconsistent(self) -> Self:
        if self.backend == "vllm" and not self.vllm.base_url:
            raise ValueError("backend=vllm needs BINLLM_VLLM__BASE_URL")
        if self.store == "redis" and self.redis_url is None:
            raise ValueError("store=redis needs BINLLM_REDIS_URL")
        if self.api_keys is not None and not api_key_set(self):
            raise ValueError(
                "BINLLM_API_KEYS is set but holds no key (authentication would be off): give comma-separated "
                "keys, or unset it for no authentication"
            )
        if self.pool_wait_s is None:
            self.pool_wait_s = (
                DEFAULT_POOL_WAIT_S
                if self.deadline_s is None
                else min(DEFAULT_POOL_WAIT_S, self.deadline_s / 2)
            )
        elif self.deadline_s is not None and self.pool_wait_s >= self.deadline_s:
            raise ValueError(
                f"BINLLM_POOL_WAIT_S ({self.pool_wait_s}) must be below BINLLM_DEADLINE_S ({self.deadline_s})"
            )
        derived = pool_size(self.server.limit_concurrency)
        if self.redis_max_connections is None:
            self.redis_max_connections = derived
        if self.vllm.max_connections is None:
            self.vllm.max_connections = derived
        return self


REQUESTS_PER_POOLED_CONNECTION = 8


def pool_size(limit_concurrency: int) -> int:
    """The Redis and vLLM pool sizes derived from the admission limit: one pooled connection per
    REQUESTS_PER_POOLED_CONNECTION admitted connections (64 for uvicorn's 512).

    Every admitted request may want a connection at once; a Redis round trip takes well under a millisecond,
    so a few requests share one connection with no noticeable wait, and the rest wait their turn (up to
    `pool_wait_s`) rather than fail. One derivation, so raising the admission limit raises the pools with it.
    """
    return max(1, -(-limit_concurrency // REQUESTS_PER_POOLED_CONNECTION))


def api_key_set(settings: ServiceSettings) -> frozenset[str]:
    """The configured API keys (empty: authentication is off)."""
    if settings.api_keys is None:
        return frozenset()
    return frozenset(k.strip() for k in settings.api_keys.get_secret_value().split(",") if k.strip())


@lru_cache(maxsize=1)
def get_settings() -> ServiceSettings:
    """The settings of this process, read once from the environment."""
    return ServiceSettings()
