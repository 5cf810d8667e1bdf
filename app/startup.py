"""The one line the service prints when it is ready to answer: where, which backend and engine, which model.

The in-process model loads and runs a warm-up scoring in the background (`app/scorers/local.py`); /readyz says
503 "warming up" meanwhile. This task polls the same readiness check and, the first time it passes, logs one
line on uvicorn's logger, so `make serve` shows when the first request will be answered by the LLM:

    make serve
    # INFO:     binllm ready: http://0.0.0.0:8000 backend=local engine=torch-bfloat16 model=a86b930d8ca29658 snapshot=...
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from app.errors import BinllmError
from app.settings import ServiceSettings

if TYPE_CHECKING:
    from app.service import PredictService


def service_url(settings: ServiceSettings) -> str:
    """The URL the settings say the server listens on."""
    return f"http://{settings.server.host}:{settings.server.port}"


async def announce_when_ready(service: PredictService, url: str, poll_s: float = 0.2) -> str:
    """Wait until /readyz would pass, log the ready line once and return it (a degraded start says so)."""
    log = logging.getLogger("uvicorn.error")  # uvicorn's configured logger, so the line is shown
    while True:
        try:
            ready = await service.readiness()
            break
        except BinllmError:  # not ready yet (loading, warming up, no snapshot): poll again
            await asyncio.sleep(poll_s)
    manifest = service.store.manifest
    model = manifest.model.model_version if manifest is not None else "?"
    line = (
        f"binllm {'ready' if ready.status == 'ready' else 'degraded (' + str(ready.degraded) + ')'}: {url} "
        f"backend={ready.backend} engine={ready.engine or 'remote'} model={model} "
        f"snapshot={ready.snapshot_version}"
    )
    (log.info if ready.status == "ready" else log.warning)(line)
    return line
