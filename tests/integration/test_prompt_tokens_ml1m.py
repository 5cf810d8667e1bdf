"""Tokens per candidate on real ML-1M rows: the serving layout with hex codes against the papers' wording.

Target: at most 25 SmolLM2 tokens per candidate on average (title, code and answer cue), from
about 61 with the papers' wording and 32-bit strings. Counted as the scorers share work: the tokens of the
full prompt beyond its longest common prefix with the user prefix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.contract.prompts import (
    CandidateItem,
    PromptStyle,
    UserContext,
    pack_embedding,
    render_candidate_suffix,
    render_user_prefix,
)
from model_store.data.io import read_split
from model_store.llm.grouped import common_prefix_length
from model_store.llm.soft_tokens import encode_prompts

VALID = Path(__file__).resolve().parents[2].parent / "shared/data/ml-1m-collm/valid_ood2.jsonl.gz"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not VALID.is_file(), reason="shared ML-1M splits absent"),
]


def mean_candidate_tokens(tokenizer, style: PromptStyle, rows: dict[str, list], n: int = 400) -> float:
    rng, soft_rng = (
        np.random.default_rng(0),
        np.random.default_rng(1),
    )  # codes drawn as before embeddings existed
    counts = []
    for history, title in zip(rows["his_title"][:n], rows["title"][:n], strict=True):
        embeddings = [pack_embedding(soft_rng.uniform(-1, 1, 32).tolist()) for _ in range(2)]
        user = UserContext(
            history_titles=tuple(t for t in history if t),
            code=int(rng.integers(1 << 32)),
            embedding=embeddings[0],
        )
        item = CandidateItem(title=title, code=int(rng.integers(1 << 32)), embedding=embeddings[1])
        prefix = render_user_prefix(user, style, with_codes=True)
        prefix_ids, full_ids = encode_prompts(
            tokenizer, [prefix, prefix + render_candidate_suffix(item, style, with_codes=True)]
        ).ids
        counts.append(len(full_ids) - common_prefix_length([prefix_ids, full_ids]))
    return float(np.mean(counts))


def test_serving_layout_costs_at_most_25_tokens_per_candidate(smollm2_tokenizer):
    rows = read_split(VALID).select(["his_title", "title"]).to_pydict()
    serving = mean_candidate_tokens(smollm2_tokenizer, PromptStyle(layout="serving", code_mode="hex"), rows)
    paper = mean_candidate_tokens(smollm2_tokenizer, PromptStyle(layout="paper", code_mode="binary"), rows)
    assert serving <= 25, serving
    assert paper > 55, paper


def test_collm_soft_tokens_cost_fewer_tokens_per_candidate_than_hex_codes(smollm2_tokenizer):
    rows = read_split(VALID).select(["his_title", "title"]).to_pydict()
    hex_codes = mean_candidate_tokens(smollm2_tokenizer, PromptStyle(layout="serving", code_mode="hex"), rows)
    soft = PromptStyle(layout="serving", code_mode="hex", encoding="embeddings")
    collm = mean_candidate_tokens(smollm2_tokenizer, soft, rows)
    print(f"tokens per candidate: hex codes {hex_codes:.1f}, CoLLM soft token {collm:.1f}")  # shown with -s
    assert collm < hex_codes - 3, (collm, hex_codes)  # one soft token instead of 8 hex digits
