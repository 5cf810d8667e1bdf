"""The prefix cache: a user's later chunks reuse its prefix's keys and values, and scores never change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_store.contract.prompts import (
    CandidateItem,
    PromptStyle,
    UserContext,
    pack_embedding,
    render_candidate_suffix,
    render_user_prefix,
)
from model_store.llm.prefix_cache import CacheScope, PrefixKVCache, prefix_key
from model_store.llm.scorer import PromptScorer
from model_store.llm.soft_tokens import Projector, install_projector, remove_projector, soft_token

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STYLE = PromptStyle()
USERS = [
    UserContext(history_titles=("Heat (1995)", "Ran (1985)", "Fargo (1996)"), code=0xDEADBEEF),
    UserContext(history_titles=("Up (2009)",), code=7),
]
ITEMS = [CandidateItem(title=f"Film {k} ({1980 + k})", code=k * 0x01010101) for k in range(9)]


def kv_of(n_bytes: int, positions: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    keys = torch.zeros((1, 1, positions, n_bytes // 8 // positions), dtype=torch.float32)  # 4 bytes a value
    return [(keys, keys.clone())]


def test_the_cache_keeps_recent_entries_within_its_byte_bound() -> None:
    cache = PrefixKVCache(max_bytes=1000)
    cache.put("a", (1,), kv_of(400))
    cache.put("b", (2,), kv_of(400))
    assert cache.get("a", (1,)) is not None  # "a" is now the most recent
    cache.put("c", (3,), kv_of(400))  # 1200 > 1000: the least recently used ("b") goes
    assert (
        cache.get("b", (2,)) is None and cache.get("a", (1,)) is not None and cache.get("c", (3,)) is not None
    )
    assert cache.bytes == 800 and len(cache) == 2
    assert (cache.hits, cache.misses) == (3, 1)
    cache.put("huge", (4,), kv_of(2000))  # larger than the whole bound: not kept, nothing else dropped
    assert cache.get("huge", (4,)) is None and len(cache) == 2
    cache.put("a", (1,), kv_of(200))  # replacing an entry counts its new size only
    assert cache.bytes == 600
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixKVCache(-1)


def test_an_entry_answers_for_its_tokens_and_their_prefixes_only() -> None:
    cache = PrefixKVCache(max_bytes=1 << 20)
    stored = kv_of(4 * 8 * 16, positions=4)  # 4 positions
    stored[0][0][0, 0, :, 0] = torch.arange(4.0)
    cache.put("user text", (7, 8, 9, 10), stored)
    assert cache.get("user text", (7, 8, 9, 10))[0][0] is stored[0][0]  # type: ignore[index]
    shorter = cache.get("user text", (7, 8))
    assert (
        shorter is not None and shorter[0][0].shape[2] == 2 and shorter[0][0][0, 0, :, 0].tolist() == [0, 1]
    )
    assert cache.get("user text", (7, 8, 9, 10, 11)) is None  # longer than what was computed
    assert cache.get("user text", (7, 5)) is None  # same key, other tokens: never another prompt's states
    assert cache.get("other text", (7, 8)) is None


def test_a_soft_token_is_keyed_by_the_embedding_it_reads_not_by_its_call_local_id() -> None:
    table_a = torch.tensor([[0.5, -1.0], [2.0, 3.0]])
    table_b = torch.tensor([[2.0, 3.0], [0.5, -1.0]])  # the same embeddings, rows swapped
    assert prefix_key([1, 2, 3], None) == (1, 2, 3) == prefix_key([1, 2, 3], table_a)
    assert prefix_key([1, soft_token(0)], table_a) == prefix_key([1, soft_token(1)], table_b)
    assert prefix_key([1, soft_token(0)], table_a) != prefix_key([1, soft_token(0)], table_b)
    scope_a, scope_b = CacheScope(PrefixKVCache(1 << 20), table_a), None
    scope_a.store([1, soft_token(1)], kv_of(64))
    scope_b = CacheScope(scope_a.cache, table_b)
    assert scope_b.lookup([1, soft_token(0)]) is not None  # the same embedding under another call-local id
    assert scope_b.lookup([1, soft_token(1)]) is None


def groups_of(users: list[UserContext], items: list[CandidateItem]) -> list[tuple[str, list[str]]]:
    return [
        (render_user_prefix(user, STYLE, with_codes=True), [render_candidate_suffix(i, STYLE, with_codes=True) for i in items])
        for user in users
    ]  # fmt: skip


def test_chunks_scored_through_the_cache_equal_one_uncached_call(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    uncached = PromptScorer(model, tokenizer, prefix_cache_bytes=0)
    cached = PromptScorer(model, tokenizer)
    assert uncached.prefix_cache is None and cached.prefix_cache is not None
    expected = uncached.score_groups(groups_of(USERS, ITEMS), batch_size=4)
    # the service's pattern: one user's candidates chunk by chunk, then both users' chunks together
    first = [cached.score_groups(groups_of(USERS[:1], ITEMS[s : s + 3]))[0] for s in range(0, 9, 3)]
    assert (cached.prefix_cache.misses, cached.prefix_cache.hits) == (1, 2)
    both = cached.score_groups(groups_of(USERS, ITEMS), batch_size=4)  # user 0 cached, user 1 not: one pass
    again = cached.score_groups(groups_of(USERS, ITEMS[:5]), batch_size=4)  # both cached: left-padded reuse
    assert len(cached.prefix_cache) == 2 and cached.prefix_cache.hits >= 4
    np.testing.assert_allclose(np.concatenate(first), expected[0], atol=1e-5)
    np.testing.assert_allclose(both, expected, atol=1e-5)
    np.testing.assert_allclose(again, [scores[:5] for scores in expected], atol=1e-5)


def test_a_one_candidate_request_reuses_the_prefix_its_user_left(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    cached, uncached = PromptScorer(model, tokenizer), PromptScorer(model, tokenizer, prefix_cache_bytes=0)
    prefix, suffixes = groups_of(USERS[:1], ITEMS)[0]
    cached.score_groups([(prefix, suffixes[:4])])  # a request of 4 candidates, then requests of one
    assert cached.prefix_cache is not None
    hits = cached.prefix_cache.hits
    for suffix in suffixes[4:7]:
        (score,) = cached.score_groups([(prefix, [suffix])])[0]
        assert score == pytest.approx(uncached.score_groups([(prefix, [suffix])])[0][0], abs=1e-5)
    assert cached.prefix_cache.hits - hits == 3 and len(cached.prefix_cache) == 1


def test_cached_soft_token_prefixes_never_answer_for_another_users_embedding(tiny_llama) -> None:
    model, tokenizer = tiny_llama
    torch.manual_seed(3)
    install_projector(model, Projector(2, model.config.hidden_size))
    try:
        style = PromptStyle(layout="serving", encoding="embeddings", code_mode="hex")
        items = [CandidateItem(title="Heat (1995)", code=1, embedding=pack_embedding([0.25, -0.5]))]

        def group(user_embedding: list[float]) -> tuple[str, list[str]]:
            user = UserContext(
                history_titles=("Ran (1985)",), code=1, embedding=pack_embedding(user_embedding)
            )
            suffixes = [render_candidate_suffix(item, style, with_codes=True) for item in items]
            return render_user_prefix(user, style, with_codes=True), suffixes

        cached, uncached = (
            PromptScorer(model, tokenizer),
            PromptScorer(model, tokenizer, prefix_cache_bytes=0),
        )
        scores = []
        for embedding in ([1.0, 0.0], [-1.0, 0.5], [1.0, 0.0]):  # in each call the user's row is soft token 0
            scores.append(cached.score_groups([group(embedding)])[0][0])
            assert scores[-1] == pytest.approx(uncached.score_groups([group(embedding)])[0][0], abs=1e-5)
        assert abs(scores[0] - scores[1]) > 1e-4  # the user's embedding matters, so a wrong hit would show
        assert cached.prefix_cache is not None and (cached.prefix_cache.misses, cached.prefix_cache.hits) == (
            2,
            1,
        )
    finally:
        remove_projector(model)
