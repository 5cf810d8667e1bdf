"""PredictService's serving policy: the code-only fallback, the deadline, load shedding and chunked scoring
(a real DirectoryStore on tmp_path, the recording scorer made to fail or stall on purpose)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
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
from app.scorers.local import LocalScorer
from app.service import PredictService, ServingPolicy
from app.store.directory import DirectoryStore
from model_store.contract.fusion import CodeScore, sigmoid
from model_store.contract.snapshot import ItemEntry
from model_store.publish import Snapshot
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


class SlowModel:
    """Blocks like a model would: 2 ms per prefix run plus 1 ms per prompt (in the local scorer's thread)."""

    def score_with_prefix(self, prefix: str, suffixes: Sequence[str]) -> list[float]:
        time.sleep(0.002 + 0.001 * len(suffixes))
        return [0.5] * len(suffixes)

    def score_groups(self, groups: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        time.sleep(0.002 * len(groups) + 0.001 * sum(len(suffixes) for _prefix, suffixes in groups))
        return [[0.5] * len(suffixes) for _prefix, suffixes in groups]


@pytest.fixture
def big_catalogue(tmp_path: Path) -> Path:
    """The test catalogue plus 300 items with codes, so a request can hold 256 distinct candidates."""
    snapshot = make_snapshot()
    items = {**snapshot.items, **{f"b{k}": ItemEntry(code=k, title=f"Film {k}") for k in range(300)}}
    root = tmp_path / "big"
    manifest = snapshot.manifest.model_copy(update={"n_items": len(items)})
    DirectoryPublisher(root).publish(Snapshot(manifest, snapshot.users, items))
    return root


def small_request_latencies(root: Path, chunk: int | None, n_small: int = 12) -> list[float]:
    """Seconds of 1-candidate requests sent one after another while two 256-candidate requests loop."""

    async def go() -> list[float]:
        store = DirectoryStore(root)
        await store.open()
        scorer = LocalScorer(SlowModel, batch_wait_ms=1.0, max_batch_prompts=256)
        await scorer.start()
        while not await scorer.ready():
            await asyncio.sleep(0.01)
        service = PredictService(
            store, scorer, max_candidates=256, policy=ServingPolicy(chunk_candidates=chunk)
        )
        large = PredictRequest(user_id="u1", item_ids=[f"b{k}" for k in range(256)])
        stop = asyncio.Event()

        async def loop_large() -> None:
            while not stop.is_set():
                await service.predict(large)

        background = [asyncio.create_task(loop_large()) for _ in range(2)]
        await asyncio.sleep(0.05)
        latencies = []
        for k in range(n_small):
            start = time.perf_counter()
            await service.predict(PredictRequest(user_id="u1", item_ids=[f"b{k}"]))
            latencies.append(time.perf_counter() - start)
        stop.set()
        await asyncio.gather(*background)
        await scorer.aclose()
        await store.aclose()
        return latencies

    return asyncio.run(go())


def test_small_requests_wait_one_chunk_not_a_whole_large_request(big_catalogue: Path) -> None:
    whole = max(small_request_latencies(big_catalogue, chunk=None))
    chunked = max(small_request_latencies(big_catalogue, chunk=32))
    print(
        f"\n1-candidate p100 beside two 256-candidate requests: whole {whole * 1000:.0f} ms, chunked {chunked * 1000:.0f} ms"
    )
    assert chunked < whole / 2
