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


async def started_tiny_scorer(model_dir: Path) -> LocalScorer:
    """A LocalScorer over `model_dir` in fp32, started and ready (loaded and warmed up)."""
    scorer = LocalScorer.from_settings(LocalSettings(model_dir=model_dir, dtype="float32"))
    await scorer.start()
    for _ in range(600):
        if await scorer.ready():
            break
        await asyncio.sleep(0.05)
    return scorer


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


def test_the_scorer_is_ready_only_after_its_warm_up_scoring() -> None:
    release = threading.Event()
    model = FakeModel()

    def warm_up(loaded: FakeModel) -> float:
        release.wait(5)
        loaded.score_groups([("warm ", ["up"])])
        return 0.0

    async def run() -> None:
        scorer = LocalScorer(lambda: model, warm_up=warm_up)  # type: ignore[arg-type]
        await scorer.start()
        await asyncio.sleep(0.05)  # loaded, warming up
        assert scorer.warming_up() and not await scorer.ready()
        release.set()
        for _ in range(250):
            if await scorer.ready():
                break
            await asyncio.sleep(0.02)
        assert await scorer.ready() and not scorer.warming_up()
        assert model.calls == [[("warm ", ["up"])]]  # the warm-up really scored, before the first request
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
        scorer = await started_tiny_scorer(tiny_llama_dir)
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


def test_dtype_auto_is_bf16_exactly_where_the_hardware_multiplies_it_natively() -> None:
    import torch

    from model_store.llm.models import serving_dtype

    avx2 = frozenset({"avx2", "fma", "f16c"})
    avx512 = avx2 | {"avx512f", "avx512bw", "avx512_vnni"}
    cases = {
        ("cuda", avx2): torch.bfloat16,  # any CUDA GPU
        ("cpu", avx512 | {"avx512_bf16"}): torch.bfloat16,  # AVX512-BF16 (e.g. AMD Zen 4)
        ("cpu", avx512 | {"amx_bf16", "amx_tile"}): torch.bfloat16,  # AMX (Intel Sapphire Rapids)
        ("cpu", avx512): torch.float32,  # AVX-512 without bf16: emulated, slower than fp32
        ("cpu", avx2): torch.float32,
        ("cpu", frozenset()): torch.float32,  # flags unreadable
    }
    for (device, flags), dtype in cases.items():
        assert serving_dtype("auto", device, flags) == dtype, (device, sorted(flags))
        assert serving_dtype("float32", device, flags) == torch.float32
        assert serving_dtype("bfloat16", device, flags) == torch.bfloat16


def test_auto_picks_int8_only_on_cpus_without_native_bf16_when_int8_is_the_chosen_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from model_store.llm import models
    from model_store.llm.models import serving_engine

    avx2 = frozenset({"avx2", "fma", "f16c"})
    for fallback in (False, True):
        monkeypatch.setattr(models, "INT8_WHERE_BF16_IS_EMULATED", fallback)
        assert serving_engine("auto", "cpu", avx2) == ("int8" if fallback else "float32")
        assert serving_engine("auto", "cpu", avx2 | {"avx512f", "avx512_bf16"}) == "bfloat16"
        assert serving_engine("auto", "cuda", avx2) == "bfloat16"  # int8 is a CPU engine
        assert serving_engine("int8", "cpu", avx2 | {"amx_bf16"}) == "int8"  # asked for: always honoured
    with pytest.raises(ValueError, match="CPU only"):
        serving_engine("int8", "cuda")
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        serving_engine("fp8", "cpu")


def test_int8_engine_quantizes_the_decoder_linears_only_and_scores_close_to_fp32(
    tiny_llama_dir: Path,
) -> None:
    import torch

    from model_store.llm.int8 import Int8Linear, is_int8

    groups = [('#Question: A user liked "Heat". Will they enjoy ', ['"Ran"? #Answer:', '"Up"? #Answer:'])]
    fp32_scorer = load_prompt_scorer(tiny_llama_dir, dtype="float32")
    fp32 = fp32_scorer.score_groups(groups)[0]
    scorer = load_prompt_scorer(tiny_llama_dir, dtype="int8")
    model = scorer.model  # type: ignore[attr-defined]
    assert is_int8(model) and not is_int8(fp32_scorer.model)  # type: ignore[attr-defined]
    assert scorer.engine == "torch-int8"  # type: ignore[attr-defined]  # as /readyz names it
    quantized = {name for name, m in model.named_modules() if isinstance(m, Int8Linear)}
    assert quantized and all(".layers." in name for name in quantized)  # not the LM head
    assert not any(type(m) is torch.nn.Linear for name, m in model.named_modules() if ".layers." in name)
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)
    int8 = scorer.score_groups(groups)[0]
    assert int8 == pytest.approx(fp32, abs=0.05) and int8 != fp32  # close, yet computed in int8
    whole = scorer.score_prompts([prefix + s for prefix, suffixes in groups for s in suffixes])  # type: ignore[attr-defined]
    # one scale per token: a row's numbers do not depend on the batch, so sharing the prefix changes only
    # the float rounding of other shapes, as in fp32
    assert whole == pytest.approx(int8, abs=1e-5)


def test_the_local_scorer_defaults_to_auto_and_says_which_engine_runs(tiny_llama_dir: Path) -> None:
    import torch

    from app.settings import LocalSettings
    from model_store.llm.models import bf16_is_native

    assert LocalSettings().dtype == "auto"
    scorer = load_prompt_scorer(tiny_llama_dir, dtype=LocalSettings().dtype)
    expected = torch.bfloat16 if bf16_is_native("cpu") else torch.float32
    assert next(scorer.model.parameters()).dtype == expected  # type: ignore[attr-defined]
    assert scorer.engine == f"torch-{str(expected).removeprefix('torch.')}"


def test_a_requests_later_chunks_reuse_its_prefix_and_metrics_count_it(tiny_llama_dir: Path) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    prefix = '#Question: A user liked "Heat" and "Fargo". Will they enjoy '
    chunks = [[PromptGroup(prefix, (f'"Film {k}"? #Answer:', f'"Other {k}"? #Answer:'))] for k in range(3)]

    async def run() -> list[list[list[float]]]:
        scorer = await started_tiny_scorer(tiny_llama_dir)
        try:
            return [await scorer.score(chunk) for chunk in chunks]  # one request's chunks, one at a time
        finally:
            await scorer.aclose()

    hits, misses = sample("binllm_prefix_cache_hits_total"), sample("binllm_prefix_cache_misses_total")
    scores = asyncio.run(run())
    assert sample("binllm_prefix_cache_misses_total") - misses == 1  # the warm-up's lookups are not counted
    assert sample("binllm_prefix_cache_hits_total") - hits == 2
    assert sample("binllm_prefix_cache_bytes") > 0
    uncached = load_prompt_scorer(tiny_llama_dir, prefix_cache_mb=0)
    for chunk, got in zip(chunks, scores, strict=True):
        assert got[0] == pytest.approx(
            uncached.score_groups([(prefix, list(chunk[0].suffixes))])[0], abs=1e-5
        )
