"""check_readiness(): what /readyz answers, each check bounded in time, degraded told apart from not ready.

Ready (200 `"status": "ready"`) when the store has an active snapshot and the backend scores a real tiny
prompt; degraded (200 `"status": "degraded"`, the pod keeps serving) when only the backend fails and the
code-only fallback can answer for it; otherwise `NotReadyError` (503) naming every reason. A backend that
is still loading and warming up its model (`warming_up()`, the local scorer) is not ready yet, not degraded:
its first answers would all be code-only. The store check and the backend probe run side by side, each cut
off after `timeout_s` (`BINLLM_READINESS_TIMEOUT_S`), so /readyz answers in about that time whatever hangs.
The error's detail lists every reason as the store gives it (logged); the client sees each reason cut before
its detail, with no path, host or URL in it.

    curl -s localhost:8000/readyz
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from app.errors import NotReadyError
from app.schemas import ReadyResponse
from app.scorers.base import Scorer
from app.store.base import CatalogStore

_T = TypeVar("_T")


async def check_readiness(
    store: CatalogStore, scorer: Scorer, *, fallback: bool, timeout_s: float
) -> ReadyResponse:
    """The /readyz answer for this store and scorer, or NotReadyError.

    `fallback` and `timeout_s` are the serving policy's (`app.service.ServingPolicy`), passed as values so
    this module needs nothing from the service that calls it.
    """
    reasons, backend_ok = await asyncio.gather(
        bounded(store.not_ready_reasons(), timeout_s, ["store check timed out"]),
        bounded(scorer.ready(), timeout_s, False),
    )
    manifest = store.manifest
    can_fall_back = fallback and manifest is not None and manifest.code_score is not None
    warming = warming_up(scorer)  # loading or running its warm-up scoring: answers would be code-only
    if warming:
        reasons.append(f"backend {scorer.name!r} warming up")
    degraded = not backend_ok and not reasons and can_fall_back
    if not backend_ok and not degraded and not warming:
        reasons.append(f"backend {scorer.name!r} not ready")
    if reasons:
        public = "not ready: " + "; ".join(public_reason(r) for r in reasons)
        raise NotReadyError("not ready: " + "; ".join(reasons), public=public)
    version = manifest.version if manifest is not None else "?"
    note = manifest.model.metrics.get("note") if manifest is not None else None
    return ReadyResponse(
        status="degraded" if degraded else "ready",
        degraded="llm_unavailable" if degraded else None,
        snapshot_version=version,
        backend=scorer.name,
        engine=getattr(scorer, "engine", None),
        replicas=replica_report(scorer),
        model_note=str(note) if note else None,
    )


async def bounded(check: Awaitable[_T], timeout_s: float, on_timeout: _T) -> _T:
    """`check`'s result, or `on_timeout` when it takes longer than `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            return await check
    except TimeoutError:
        return on_timeout


def replica_report(scorer: Scorer) -> dict[str, bool] | None:
    """Per vLLM replica, whether it passed the last readiness probe (None for a single backend)."""
    report = getattr(scorer, "replica_report", None)
    return report() if callable(report) else None


def warming_up(scorer: Scorer) -> bool:
    """True while a backend that loads in the background (the local model) is still loading or warming up."""
    check = getattr(scorer, "warming_up", None)
    return bool(check()) if callable(check) else False


def public_reason(reason: str) -> str:
    """A not-ready reason without its detail: the text before ': ', unless that holds a path or a URL."""
    head = reason.split(": ", 1)[0]
    return "snapshot not loaded" if "/" in head or len(head) > 80 else head
