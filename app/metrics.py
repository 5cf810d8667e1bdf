"""Prometheus metrics of the service (prefix `binllm_`), and the ASGI middleware that times requests.

With several uvicorn workers each process has its own counters; set `PROMETHEUS_MULTIPROC_DIR` to an empty,
writable directory before starting uvicorn, and prometheus-client keeps every value in memory-mapped files
there, which `/metrics` (any worker) sums across processes. The directory must be emptied between runs.

    PROMETHEUS_MULTIPROC_DIR=/tmp/binllm-prom uvicorn app.main:app --workers 2
    curl -s localhost:8000/metrics | grep binllm_
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

REQUEST_SECONDS = Histogram(
    "binllm_request_duration_seconds",
    "HTTP request latency, by route template, method and status code.",
    ["route", "method", "status"],
    buckets=_LATENCY_BUCKETS,
)
BACKEND_SECONDS = Histogram(
    "binllm_backend_duration_seconds",
    "Time spent in the scoring backend per request.",
    ["backend"],
    buckets=_LATENCY_BUCKETS,
)
CANDIDATES = Histogram(
    "binllm_candidates_per_request",
    "Number of item_ids in one /predict request.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 256, 512, 1024, 4096),
)
ITEM_CACHE_HITS = Counter("binllm_item_cache_hits_total", "Item entries served from the in-process cache.")
ITEM_CACHE_MISSES = Counter(
    "binllm_item_cache_misses_total", "Item entries that had to be read from the store."
)
PREFIX_CACHE_HITS = Counter(
    "binllm_prefix_cache_hits_total",
    "User prefixes the in-process scorer found in its prefix cache (keys/values reused, not run again).",
)
PREFIX_CACHE_MISSES = Counter(
    "binllm_prefix_cache_misses_total", "User prefixes the in-process scorer had to run."
)
PREFIX_CACHE_BYTES = Gauge(
    "binllm_prefix_cache_bytes",
    "Memory the in-process scorer's prefix cache holds, per process.",
    multiprocess_mode="livesum",
)
STORE_ROUND_TRIPS = Counter(
    "binllm_store_round_trips_total", "Network round trips to the catalogue store.", ["store"]
)
COLD_STARTS = Counter(
    "binllm_cold_start_total",
    "Candidates scored with the text-only prompt, by reason: user (no user code), item (no item code), "
    "model (the model is text-only).",
    ["reason"],
)
DEGRADED = Counter(
    "binllm_degraded_total",
    "Requests answered with the code-only fallback score because the LLM could not answer, by reason.",
    ["reason"],
)
ANSWERS = Counter(
    "binllm_answers_total",
    "Scored /predict answers by how much of them the LLM scored: full (every candidate), partial (the best "
    "by code score, the rest codes-only: degraded llm_partial), codes_only (none: the code-only fallback).",
    ["llm"],
)
SHED = Counter(
    "binllm_shed_requests_total", "Requests refused with 503 because too many candidates were queued."
)
QUEUED_CANDIDATES = Gauge(
    "binllm_queued_candidates",
    "Candidates admitted and not yet answered (queued or being scored), per process.",
    multiprocess_mode="livesum",
)
CLIENT_DISCONNECTS = Counter(
    "binllm_client_disconnects_total", "Requests cancelled because the client hung up before the answer."
)
ERRORS = Counter("binllm_errors_total", "Error responses, by error type.", ["type"])
BACKEND_REPLICA_READY = Gauge(
    "binllm_backend_replica_ready",
    "Whether each vLLM replica passed the last readiness probe (1) or not (0).",
    ["replica"],
    multiprocess_mode="livemax",
)
SNAPSHOT_REJECTED = Counter(
    "binllm_snapshot_rejected_total",
    "Snapshot versions refused at load time (the last good one keeps serving), by store, file and reason.",
    ["store", "file", "reason"],
)


def _registry() -> CollectorRegistry:
    """This process's registry, or one summing every worker's files in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def serve_metrics_port(port: int, addr: str) -> WSGIServer | None:
    """Serve the exposition on its own port (BINLLM_METRICS_PORT) in a thread; with several workers the
    first one to bind serves it (in multiprocess mode any worker's answer sums them all), the others skip."""
    try:
        server, _thread = start_http_server(port, addr=addr, registry=_registry())
    except OSError as exc:
        logger.info("metrics port %d already served (%s); this worker skips it", port, exc.strerror)
        return None
    return server


def render_metrics() -> tuple[bytes, str]:
    """The exposition text of this process, or of all workers in multiprocess mode; and its content type."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The method as a label: one of the standard methods, else "other" (made-up methods are unbounded)."""
    return method if method in KNOWN_METHODS else "other"


class RequestMetricsMiddleware:
    """Times every HTTP request into `binllm_request_duration_seconds`.

    A pure ASGI middleware (not BaseHTTPMiddleware) to keep per-request overhead small. Every label is
    bounded: the route label is the matched route's template, or "unmatched", and the method one of the
    standard methods or "other", so neither random paths nor made-up methods can grow the metrics; an
    exception that escapes the app is recorded as status 500 before it propagates to the catch-all, and a
    request cancelled because its client left as 499.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        except asyncio.CancelledError:
            status = 499  # the client hung up (nginx's code for it)
            raise
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            REQUEST_SECONDS.labels(path, method_label(scope.get("method", "")), str(status)).observe(
                time.perf_counter() - start
            )
