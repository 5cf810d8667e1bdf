"""GET /metrics: Prometheus exposition (all workers summed when PROMETHEUS_MULTIPROC_DIR is set)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import SettingsDep
from app.errors import NotFoundError
from app.metrics import render_metrics

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(settings: SettingsDep) -> Response:
    """The binllm_* metrics (and the process/platform collectors in single-process mode); 404 when they
    are served on BINLLM_METRICS_PORT instead."""
    if settings.metrics_port is not None:
        raise NotFoundError(f"metrics are served on port {settings.metrics_port}")
    body, content_type = render_metrics()
    return Response(content=body, media_type=content_type)
