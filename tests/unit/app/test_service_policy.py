"""PredictService's serving policy: the code-only fallback, the deadline, load shedding and chunked scoring
(a real DirectoryStore on tmp_path, the recording scorer made to fail or stall on purpose)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from app.errors import (
    BackendResponseError,
    BackendUnavailableError,
    DeadlineExceededError,
    NotReadyError,
    OverloadedError,
)
from app.schemas import PredictRequest, PredictResponse, ReadyResponse
from app.service import PredictService, ServingPolicy
from app.store.directory import DirectoryStore
from model_store.contract.fusion import CodeScore, sigmoid
from model_store.publish.directory import DirectoryPublisher
from tests.unit.app.conftest import ITEMS, USERS, RecordingScorer, make_snapshot

CODES = CodeScore(bits=32, scale=0.1, bias=-0.5, unknown_user_code=0xAAAA0000, unknown_item_code=0x0000AAAA)


@pytest.fixture
def scored_dir(tmp_path: Path) -> Path:
    """The test catalogue published with the codes' own score (what the fallback serves)."""
    root = tmp_path / "snapshots"
    DirectoryPublisher(root).publish(make_snapshot(code_score=CODES))
    return root


def run(root: Path, scorer: Any, policy: ServingPolicy, *bodies: dict[str, Any]) -> list[Any]:
    """Concurrent predictions (results or the exceptions raised), one store and service."""

    async def go() -> list[Any]:
        store = DirectoryStore(root)
        await store.open()
        try:
            service = PredictService(store, scorer, max_candidates=policy.max_candidates, policy=policy)
            calls = (service.predict(PredictRequest(**body)) for body in bodies)
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await store.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize(
    "failure", [BackendUnavailableError("vLLM down"), BackendResponseError("vLLM answered 500")]
)
def test_backend_failure_answers_the_code_score_marked_degraded(
    scored_dir: Path, scorer: RecordingScorer, failure: Exception
) -> None:
    scorer.fail_with = failure
    (answer,) = run(scored_dir, scorer, ServingPolicy(), {"user_id": "u1", "item_ids": ["i2", "i3", "i1"]})
    assert isinstance(answer, PredictResponse)
    assert (answer.degraded, answer.score_kind) == ("llm_unavailable", "codes")
    user = USERS["u1"].code
    assert [s.score for s in answer.scores] == [
        sigmoid(CODES.logit(user, ITEMS[i].code)) for i in ("i2", "i3", "i1")
    ]
    assert all(s.p_yes is None for s in answer.scores)
    assert answer.cold == ["i3"]  # scored with the learned unknown item code


def test_the_degraded_log_line_has_credentials_redacted(
    scored_dir: Path, scorer: RecordingScorer, caplog: pytest.LogCaptureFixture
) -> None:
    scorer.fail_with = BackendUnavailableError("vLLM unreachable at http://admin:S3cretPw@vllm:8000")
    with caplog.at_level(logging.WARNING):
        (answer,) = run(scored_dir, scorer, ServingPolicy(), {"user_id": "u1", "item_ids": ["i1"]})
    assert answer.degraded == "llm_unavailable"
    assert "degraded answer" in caplog.text and "S3cretPw" not in caplog.text


def test_a_codeless_user_is_scored_with_the_unknown_code_and_every_item_is_cold(
    scored_dir: Path, scorer: RecordingScorer
) -> None:
    scorer.fail_with = BackendUnavailableError("down")
    (answer,) = run(scored_dir, scorer, ServingPolicy(), {"user_id": "u2", "item_ids": ["i1", "i2"]})
    assert answer.cold == ["i1", "i2"]
    assert answer.scores[0].score == sigmoid(CODES.logit(None, ITEMS["i1"].code))


def test_fallback_off_keeps_the_503(scored_dir: Path, scorer: RecordingScorer) -> None:
    scorer.fail_with = BackendUnavailableError("down")
    (answer,) = run(scored_dir, scorer, ServingPolicy(fallback=False), {"user_id": "u1", "item_ids": ["i1"]})
    assert isinstance(answer, BackendUnavailableError)


def test_snapshot_without_a_code_score_keeps_the_503(snapshot_dir: Path, scorer: RecordingScorer) -> None:
    scorer.fail_with = BackendUnavailableError("down")
    (answer,) = run(snapshot_dir, scorer, ServingPolicy(), {"user_id": "u1", "item_ids": ["i1"]})
    assert isinstance(answer, BackendUnavailableError)


def test_a_backend_past_the_deadline_is_degraded_or_a_504(scored_dir: Path, scorer: RecordingScorer) -> None:
    scorer.delay_s = 5.0
    body = {"user_id": "u1", "item_ids": ["i1"]}
    (late,) = run(scored_dir, scorer, ServingPolicy(deadline_s=0.05), body)
    assert isinstance(late, PredictResponse) and late.degraded == "llm_deadline"
    (refused,) = run(scored_dir, scorer, ServingPolicy(deadline_s=0.05, fallback=False), body)
    assert isinstance(refused, DeadlineExceededError) and refused.status_code == 504


def test_candidates_beyond_the_queue_cap_are_shed_with_503(scored_dir: Path, scorer: RecordingScorer) -> None:
    scorer.delay_s = 0.05
    policy = ServingPolicy(max_queued_candidates=4)
    bodies = [{"user_id": "u1", "item_ids": ["i1", "i2", "i3"]} for _ in range(3)]
    answers = run(scored_dir, scorer, policy, *bodies)
    shed = [a for a in answers if isinstance(a, OverloadedError)]
    assert len(shed) == 2 and shed[0].status_code == 503 and shed[0].headers() == {"Retry-After": "1"}
    assert isinstance(answers[0], PredictResponse) and answers[0].degraded is None


def test_a_request_larger_than_the_cap_is_admitted_when_idle(
    snapshot_dir: Path, scorer: RecordingScorer
) -> None:
    (answer,) = run(
        snapshot_dir,
        scorer,
        ServingPolicy(max_queued_candidates=1),
        {"user_id": "u1", "item_ids": ["i1", "i2"]},
    )
    assert isinstance(answer, PredictResponse)


def test_chunked_scoring_gives_the_same_scores_in_calls_of_at_most_n(
    snapshot_dir: Path, scorer: RecordingScorer
) -> None:
    body = {"user_id": "u1", "item_ids": ["i1", "i2", "h1", "h2", "i3"]}
    (whole,) = run(snapshot_dir, scorer, ServingPolicy(), body)
    chunked_scorer = RecordingScorer()
    (chunked,) = run(snapshot_dir, chunked_scorer, ServingPolicy(chunk_candidates=2), body)
    assert chunked.scores == whole.scores and chunked.cold == whole.cold
    sizes = [sum(len(g.suffixes) for g in call) for call in chunked_scorer.calls]
    assert sizes == [2, 2, 1] and len(scorer.calls) == 1


def test_a_cancelled_request_stops_at_the_next_chunk(snapshot_dir: Path) -> None:
    scorer = RecordingScorer()
    scorer.delay_s = 0.1

    async def go() -> int:
        store = DirectoryStore(snapshot_dir)
        await store.open()
        service = PredictService(store, scorer, max_candidates=256, policy=ServingPolicy(chunk_candidates=1))
        task = asyncio.create_task(
            service.predict(PredictRequest(user_id="u1", item_ids=["i1", "i2", "h1", "h2"]))
        )
        await asyncio.sleep(0.15)  # the second chunk is being scored
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)
        await store.aclose()
        return len(scorer.calls)

    assert asyncio.run(go()) == 2


def readiness(root: Path, scorer: Any, policy: ServingPolicy, store: Any = None) -> Any:
    async def go() -> Any:
        the_store = store or DirectoryStore(root)
        await the_store.open()
        service = PredictService(the_store, scorer, max_candidates=256, policy=policy)
        try:
            return await service.readiness()
        except NotReadyError as exc:
            return exc

    return asyncio.run(go())


def test_a_failing_backend_with_a_fallback_is_degraded_not_unready(
    scored_dir: Path, scorer: RecordingScorer
) -> None:
    scorer.is_ready = False
    ready = readiness(scored_dir, scorer, ServingPolicy())
    assert isinstance(ready, ReadyResponse) and (ready.status, ready.degraded) == (
        "degraded",
        "llm_unavailable",
    )
    refused = readiness(scored_dir, scorer, ServingPolicy(fallback=False))
    assert isinstance(refused, NotReadyError) and "backend 'recording' not ready" in refused.public


def test_every_readiness_check_is_bounded(scored_dir: Path) -> None:
    class HangingScorer(RecordingScorer):
        async def ready(self) -> bool:
            await asyncio.sleep(30)
            return True

    class HangingStore(DirectoryStore):
        async def not_ready_reasons(self) -> list[str]:
            await asyncio.sleep(30)
            return []

    start = time.perf_counter()
    answer = readiness(
        scored_dir, HangingScorer(), ServingPolicy(readiness_timeout_s=0.2), HangingStore(scored_dir)
    )
    assert time.perf_counter() - start < 1.0
    assert isinstance(answer, NotReadyError) and "store check timed out" in answer.public
