"""The FastAPI app: `create_app(settings)` wires routes, error handlers and metrics; the lifespan opens the
catalogue store and starts the scoring backend, and closes both on shutdown.

    uvicorn app.main:app                                    # embedded default: local model, directory store
    BINLLM_BACKEND=vllm BINLLM_VLLM__BASE_URL=http://localhost:8001 \
      BINLLM_STORE=redis BINLLM_REDIS_URL=redis://localhost:6379/0 uvicorn app.main:app --workers 2

Importing this module reads no settings and opens nothing: `app = create_app()` resolves the settings from
the environment when the lifespan starts (refusing inconsistent ones there), so `import app.main` works
without Redis, a model or torch. Backends are imported lazily by `build_scorer`, so torch is imported only
for backend=local and httpx-based vLLM code only for backend=vllm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app.api.errors import install_error_handlers
from app.api.guard import RequestGuardMiddleware
from app.api.openapi import install_openapi
from app.api.routes import docs, health, metrics, predict
from app.metrics import RequestMetricsMiddleware, serve_metrics_port
from app.scorers.base import Scorer
from app.service import PredictService, ServingPolicy
from app.settings import ServiceSettings, get_settings
from app.startup import announce_when_ready, service_url
from app.store.base import CatalogStore
from model_store.contract.snapshot import ModelManifest, split_cluster_url

logger = logging.getLogger(__name__)


def cluster_failover_s(settings: ServiceSettings) -> float:
    """How long a Redis Cluster call retries across a failover: `redis_failover_s`, at most half of the
    deadline, so that a request that waited out a failover still has time for the LLM."""
    if settings.deadline_s is None:
        return settings.redis_failover_s
    return min(settings.redis_failover_s, settings.deadline_s / 2)


def build_store(settings: ServiceSettings) -> CatalogStore:
    """The store `settings.store` names (not yet opened)."""
    if settings.store == "redis":
        from app.store.redis import RedisStore

        assert settings.redis_url is not None  # guaranteed by ServiceSettings' validator
        assert settings.redis_max_connections is not None and settings.pool_wait_s is not None  # derived
        url = settings.redis_url.get_secret_value()
        common: dict[str, Any] = {
            "namespace": settings.redis_namespace,
            "item_cache_size": settings.item_cache_size,
            "max_connections": settings.redis_max_connections,
            "timeout_s": settings.redis_timeout_s,
            "health_check_interval_s": settings.redis_health_check_s,
            "pool_wait_s": settings.pool_wait_s,
            "verify_max_keys": settings.redis_verify_max_keys,
        }
        if settings.redis_cluster or split_cluster_url(url)[1]:
            from app.store.cluster import RedisClusterStore

            return RedisClusterStore(url, failover_s=cluster_failover_s(settings), **common)
        return RedisStore(url, retries=settings.redis_retries, **common)
    from app.store.directory import DirectoryStore

    return DirectoryStore(settings.snapshot_dir)


def build_scorer(settings: ServiceSettings, store: CatalogStore) -> Scorer:
    """The backend `settings.backend` names; imported here so unused backends cost nothing."""
    if settings.backend == "vllm":
        from app.scorers.vllm import VllmScorer

        def served_model() -> ModelManifest | None:  # the active snapshot's, read per call: never latched
            manifest = store.manifest
            return manifest.model if manifest is not None else None

        assert settings.pool_wait_s is not None  # derived by the validator when unset
        return VllmScorer(settings.vllm, manifest_source=served_model, pool_wait_s=settings.pool_wait_s)
    if settings.backend == "local":
        from app.scorers.local import LocalScorer

        return LocalScorer.from_settings(settings.local)
    from app.scorers.instant import InstantScorer

    logger.warning("backend=instant: pseudo-scores for benchmarking only, not a model")
    return InstantScorer()


def serving_policy(settings: ServiceSettings) -> ServingPolicy:
    """Admission, deadline, chunking and fallback as the settings say; chunks only for the local model."""
    return ServingPolicy(
        max_candidates=settings.max_candidates,
        fallback=settings.fallback,
        deadline_s=settings.deadline_s,
        chunk_candidates=settings.local.chunk_candidates if settings.backend == "local" else None,
        max_queued_candidates=settings.max_queued_candidates,
        readiness_timeout_s=settings.readiness_timeout_s,
        cascade_safety=settings.cascade_safety,
    )


async def log_what_is_served(store: CatalogStore) -> None:
    """Say at start-up which model answers (the tuned ML-1M model, or the untuned synthetic demo)."""
    log = logging.getLogger("uvicorn.error")  # uvicorn's configured logger, so the line is shown
    reasons = await store.not_ready_reasons()
    manifest = store.manifest
    if manifest is None:
        log.warning("no snapshot to serve yet: %s", "; ".join(reasons) or "unknown reason")
        return
    note = manifest.model.metrics.get("note", "no note in the model manifest")
    log.info("serving snapshot %s, model %s: %s", manifest.version, manifest.model.model_version, note)


def create_app(
    settings: ServiceSettings | None = None,
    *,
    store: CatalogStore | None = None,
    scorer: Scorer | None = None,
) -> FastAPI:
    """The service app. `store`/`scorer` replace the ones the settings name (tests); either way the
    lifespan opens and closes them. `settings=None` reads the environment at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or get_settings()
        the_store = store or build_store(resolved)
        await the_store.open()
        the_scorer = scorer or build_scorer(resolved, the_store)
        await the_scorer.start()
        app.state.settings = resolved
        app.state.store = the_store
        app.state.scorer = the_scorer
        app.state.service = PredictService(
            the_store, the_scorer, max_candidates=resolved.max_candidates, policy=serving_policy(resolved)
        )
        await log_what_is_served(the_store)
        announce = asyncio.create_task(announce_when_ready(app.state.service, service_url(resolved)))
        metrics_server = (
            serve_metrics_port(resolved.metrics_port, resolved.server.host)
            if resolved.metrics_port is not None
            else None
        )
        try:
            yield
        finally:
            announce.cancel()
            if metrics_server is not None:
                metrics_server.shutdown()
            await the_scorer.aclose()
            await the_store.aclose()

    app = FastAPI(
        title="binllm",
        summary="BinLLM click-through prediction",
        lifespan=lifespan,
        docs_url=None,  # app/api/routes/docs.py serves them, only while no API keys are set
        redoc_url=None,
    )
    app.add_middleware(RequestMetricsMiddleware)
    app.add_middleware(RequestGuardMiddleware)  # outermost: ids, body limit, cancellation
    install_error_handlers(app)
    install_openapi(app)
    for module in (predict, health, metrics, docs):
        app.include_router(module.router)
    return app


app = create_app()
