"""LocalScorer: background loading, micro-batching of concurrent requests, prefix merging (fake model)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from app.errors import BackendUnavailableError
from app.scorers.base import PromptGroup
from app.scorers.instant import pseudo_score
from app.scorers.local import LocalScorer, load_prompt_scorer, score_batch
from app.settings import LocalSettings


class FakeModel:
    """score_groups = pseudo_score of each full prompt; records calls and the threads they ran on."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[str, list[str]]]] = []
        self.threads: set[int] = set()

    def score_groups(self, groups: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        self.calls.append([(prefix, list(suffixes)) for prefix, suffixes in groups])
        self.threads.add(threading.get_ident())
        return [[pseudo_score(prefix + s) for s in suffixes] for prefix, suffixes in groups]


def expected(groups: Sequence[PromptGroup]) -> list[list[float]]:
    return [[pseudo_score(p) for p in g.prompts()] for g in groups]


def test_score_batch_merges_groups_with_the_same_prefix() -> None:
    model = FakeModel()
    a = [PromptGroup("P", ("x", "y"))]
    b = [PromptGroup("P", ("y", "z")), PromptGroup("Q", ("x",))]
    assert score_batch(model, [a, b]) == [expected(a), expected(b)]
    assert model.calls == [[("P", ["x", "y", "z"]), ("Q", ["x"])]]  # one model call for both users


def test_concurrent_requests_within_the_window_run_as_one_batch() -> None:
    model = FakeModel()
    requests = [[PromptGroup(f"user{i} ", (f"item{i}", "shared"))] for i in range(5)]

    async def run() -> tuple[list[list[list[float]]], int]:
        scorer = LocalScorer(lambda: model, batch_wait_ms=50.0)
        await scorer.start()
        while not await scorer.ready():
            await asyncio.sleep(0.001)
        results = await asyncio.gather(*(scorer.score(groups) for groups in requests))
        await scorer.aclose()
        return list(results), scorer.batches_run

    results, batches = asyncio.run(run())
    assert results == [expected(groups) for groups in requests]
    assert batches == 1 and len(model.calls) == 1 and len(model.calls[0]) == 5 and len(model.threads) == 1


def test_batch_stops_gathering_at_the_prompt_limit() -> None:
    model = FakeModel()

    async def run() -> int:
        scorer = LocalScorer(lambda: model, batch_wait_ms=50.0, max_batch_prompts=2)
        await scorer.start()
        while not await scorer.ready():
            await asyncio.sleep(0.001)
        await asyncio.gather(*(scorer.score([PromptGroup(f"u{i}", ("a",))]) for i in range(4)))
        await scorer.aclose()
        return scorer.batches_run

    assert asyncio.run(run()) == 2


def test_small_jobs_gathered_with_large_ones_run_first_in_a_call_of_their_own() -> None:
    """Two 32-candidate chunks and a 1-candidate request in one window: the small one is answered while the
    (slow) large call runs, so it never waits for chunks it was gathered with."""
    model = FakeModel()
    done_before_large: list[bool] = []
    small_future: list[asyncio.Future[list[list[float]]]] = []

    class Watching(FakeModel):
        def score_groups(self, groups: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
            if sum(len(s) for _, s in groups) > 1:
                time.sleep(0.5)  # the large call takes a while; the small answer is out by its end
                done_before_large.append(small_future[0].done())
            return model.score_groups(groups)

    large = [[PromptGroup(f"big{i} ", tuple(f"c{j}" for j in range(32)))] for i in range(2)]
    small = [PromptGroup("small ", ("c0",))]

    async def run() -> list[list[list[float]]]:
        scorer = LocalScorer(Watching, batch_wait_ms=50.0)
        await scorer.start()
        while not await scorer.ready():
            await asyncio.sleep(0.001)
        small_future.append(asyncio.ensure_future(scorer.score(small)))
        results = await asyncio.gather(*(scorer.score(groups) for groups in large))
        results.append(await small_future[0])
        await scorer.aclose()
        return list(results)

    results = asyncio.run(run())
    assert results == [expected(large[0]), expected(large[1]), expected(small)]
    assert [len(call) for call in model.calls] == [1, 2]  # the small job alone, then both large chunks
    assert done_before_large == [True]


def test_small_job_calls_can_be_turned_off() -> None:
    model = FakeModel()

    async def run() -> None:
        scorer = LocalScorer(lambda: model, batch_wait_ms=50.0, small_job_prompts=0)
        await scorer.start()
        while not await scorer.ready():
            await asyncio.sleep(0.001)
        await asyncio.gather(
            scorer.score([PromptGroup("a", ("x",))]), scorer.score([PromptGroup("b", ("x", "y", "z"))])
        )
        await scorer.aclose()

    asyncio.run(run())
    assert [len(call) for call in model.calls] == [2]


def test_requests_before_the_model_loads_are_unavailable() -> None:
    release = threading.Event()

    def slow_loader() -> FakeModel:
        release.wait(5)
        return FakeModel()

    async def run() -> None:
        scorer = LocalScorer(slow_loader)
        await scorer.start()
        assert not await scorer.ready()
        with pytest.raises(BackendUnavailableError, match="loading"):
            await scorer.score([PromptGroup("p", ("s",))])
        release.set()
        await scorer.aclose()

    asyncio.run(run())


def test_a_model_that_fails_to_load_keeps_the_scorer_unready_and_says_why() -> None:
    def broken() -> FakeModel:
        raise FileNotFoundError("no config.json in /models/x")

    async def run() -> None:
        scorer = LocalScorer(broken)
        await scorer.start()
        await asyncio.sleep(0.05)
        assert not await scorer.ready()
        with pytest.raises(BackendUnavailableError, match=r"config\.json"):
            await scorer.score([PromptGroup("p", ("s",))])
        await scorer.aclose()

    asyncio.run(run())


def test_real_tiny_model_scores_match_whole_prompt_scoring(tiny_llama_dir: Path) -> None:
    """End to end through load_prompt_scorer and PromptScorer on a tiny random Llama (torch imported here)."""
    from model_store.llm.scorer import PromptScorer

    groups = [
        PromptGroup('#Question: A user liked "Heat". Will they enjoy ', ('"Ran"? #Answer:', '"Up"? #Answer:'))
    ]

    async def run() -> list[list[float]]:
        scorer = LocalScorer.from_settings(LocalSettings(model_dir=tiny_llama_dir))
        await scorer.start()
        for _ in range(600):
            if await scorer.ready():
                break
            await asyncio.sleep(0.05)
        try:
            return await scorer.score(groups)
        finally:
            await scorer.aclose()

    (scores,) = asyncio.run(run())
    reference = PromptScorer.from_dir(tiny_llama_dir, device="cpu").score_prompts(groups[0].prompts())
    assert scores == pytest.approx(reference, abs=1e-4)
    assert scores[0] != scores[1]


def test_bf16_weights_score_close_to_fp32_and_keep_the_margin_in_fp32(tiny_llama_dir: Path) -> None:
    import torch

    from model_store.llm.models import serving_dtype

    assert (
        serving_dtype("float32", "cuda") == torch.float32 and serving_dtype("auto", "cuda") == torch.bfloat16
    )
    groups = [('#Question: A user liked "Heat". Will they enjoy ', ['"Ran"? #Answer:', '"Up"? #Answer:'])]
    fp32 = load_prompt_scorer(tiny_llama_dir, dtype="float32").score_groups(groups)[0]
    bf16_scorer = load_prompt_scorer(tiny_llama_dir, dtype="bfloat16")
    assert next(bf16_scorer.model.parameters()).dtype == torch.bfloat16  # type: ignore[attr-defined]
    bf16 = bf16_scorer.score_groups(groups)[0]
    assert bf16 == pytest.approx(fp32, abs=0.02) and bf16 != fp32  # close, yet really computed in bf16


def test_the_local_scorer_runs_fp32_unless_told_otherwise(tiny_llama_dir: Path) -> None:
    """bf16 cost the shipped model 0.0023 UAUC on 1,000 valid rows (bench/bf16_quality.py): fp32 is the default."""
    import torch

    from app.settings import LocalSettings

    assert LocalSettings().dtype == "float32"
    scorer = load_prompt_scorer(tiny_llama_dir)
    assert next(scorer.model.parameters()).dtype == torch.float32  # type: ignore[attr-defined]
