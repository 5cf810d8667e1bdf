"""/readyz while the in-process model warms up: not ready (503 naming it), then ready with its engine."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from app.errors import NotReadyError
from app.schemas import ReadyResponse
from app.service import PredictService, ServingPolicy
from app.store.directory import DirectoryStore
from model_store.contract.fusion import CodeScore
from model_store.publish.directory import DirectoryPublisher
from tests.unit.app.conftest import RecordingScorer, make_snapshot

CODES = CodeScore(bits=32, scale=0.1, bias=-0.5, unknown_user_code=0, unknown_item_code=0)


class WarmingScorer(RecordingScorer):
    """Loading and warming up until told otherwise; names its engine once warm."""

    def __init__(self) -> None:
        super().__init__()
        self.is_ready = False
        self.engine: str | None = None

    def warming_up(self) -> bool:
        return not self.is_ready


def readiness(root: Path, scorer: Any) -> ReadyResponse | NotReadyError:
    async def go() -> ReadyResponse | NotReadyError:
        store = DirectoryStore(root)
        await store.open()
        try:
            return await PredictService(store, scorer, max_candidates=256, policy=ServingPolicy()).readiness()
        except NotReadyError as exc:
            return exc
        finally:
            await store.aclose()

    return asyncio.run(go())


def test_a_warming_model_is_not_ready_not_degraded_even_with_a_fallback(tmp_path: Path) -> None:
    DirectoryPublisher(tmp_path).publish(make_snapshot(code_score=CODES))
    scorer = WarmingScorer()
    warming = readiness(tmp_path, scorer)
    assert isinstance(warming, NotReadyError) and warming.status_code == 503
    assert warming.public == "not ready: backend 'recording' warming up"  # one reason, not also "not ready"
    scorer.is_ready, scorer.engine = True, "torch-bfloat16"
    ready = readiness(tmp_path, scorer)
    assert isinstance(ready, ReadyResponse) and (ready.status, ready.engine) == ("ready", "torch-bfloat16")
