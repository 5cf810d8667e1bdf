"""Prefix-shared forward passes: same margins and gradients as whole prompts, for any grouping or batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from model_store.contract.prompts import (
    CandidateItem,
    PromptStyle,
    UserContext,
    render_candidate_suffix,
    render_user_prefix,
)
from model_store.llm.answer import find_answer_tokens
from model_store.llm.dataset import PromptSet, subsample_by_group
from model_store.llm.grouped import (
    PrefixGroup,
    batches_of_groups,
    group_rows,
    make_group,
    ordered_margins,
    shuffled_groups,
)
from model_store.llm.models import load_causal_lm
from model_store.llm.scorer import PromptScorer
from model_store.llm.trainer import pad_token_id, prefix_groups
from model_store.llm.trunk import compute_trunk, frozen_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STYLE = PromptStyle(layout="serving", code_mode="hex")
USERS = (
    UserContext(history_titles=("Heat (1995)", "Ran (1985)", "Fargo (1996)"), code=0xDEADBEEF),
    UserContext(history_titles=("M (1931)",), code=0x01234567),
    UserContext(history_titles=(), code=None),
)
TITLES = ("Toy Story (1995)", "M", "Star Wars: Episode IV - A New Hope (1977)", "Paris, Texas (1984)")


def prompt_set() -> PromptSet:
    prompts, prefixes, uids = [], [], []
    for uid, user in enumerate(USERS):
        for index, title in enumerate(TITLES[: 4 - uid]):
            codes = user.code is not None
            item = CandidateItem(title=title, code=0x0F0F0F0F * (index + 1) % (1 << 32))
            prefix = render_user_prefix(user, STYLE, with_codes=codes)
            prefixes.append(prefix)
            prompts.append(prefix + render_candidate_suffix(item, STYLE, with_codes=codes))
            uids.append(uid)
    n = len(prompts)
    return PromptSet(prompts, prefixes, [i % 2 for i in range(n)], uids, list(range(n)))


def lora_model(tiny_llama_dir: Path, layers: list[int] | None = None) -> torch.nn.Module:
    model, _ = load_causal_lm(tiny_llama_dir, dtype=torch.float32, device="cpu")
    config = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], layers_to_transform=layers
    )
    peft_model = get_peft_model(model, config)
    torch.manual_seed(0)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # B = 0 at start would make every LoRA gradient but B's vanish
            torch.nn.init.normal_(parameter, std=0.05)
    return peft_model


def test_grouping_shares_token_prefixes_and_leaves_each_prompt_a_token() -> None:
    token_ids = [[1, 2, 3, 4], [1, 2, 3, 5, 6], [7, 8]]
    groups = [make_group(token_ids, rows) for rows in group_rows(["a", "a", "b"])]
    assert groups[0] == PrefixGroup((1, 2, 3), ((4,), (5, 6)), (0, 1))
    assert groups[1] == PrefixGroup((7,), ((8,),), (2,))  # alone: all but the last token is prefix


def test_batches_hold_whole_groups_and_split_only_big_ones() -> None:
    groups = [PrefixGroup((1,), tuple((2,) for _ in range(size)), tuple(range(size))) for size in (3, 2, 7)]
    batches = list(batches_of_groups(groups, 4))
    assert [[len(g.rows) for g in batch] for batch in batches] == [[3], [2], [4], [3]]
    assert sorted(len(shuffled_groups(groups, (0, 1, 2))) for _ in range(2)) == [3, 3]


def test_group_sampling_keeps_whole_groups_up_to_the_limit() -> None:
    keys = [("u1", "h")] * 3 + [("u2", "h")] * 2 + [("u3",)] * 4
    kept = subsample_by_group(keys, 5, seed=0)
    assert len(kept) == 5
    counts = {keys[row] for row in kept}
    assert len(counts) <= 2  # at most one group is cut, the others are whole
    assert list(kept) == sorted(kept)
    assert list(subsample_by_group(keys, None, seed=0)) == list(range(9))


def test_shared_margins_equal_whole_prompt_margins_and_gradients(tiny_llama_dir: Path) -> None:
    model = lora_model(tiny_llama_dir)
    _, tokenizer = load_causal_lm(tiny_llama_dir, device="cpu")
    answer = find_answer_tokens(tokenizer)
    data = prompt_set()
    shared = prefix_groups(tokenizer, data)
    whole = prefix_groups(tokenizer, data, share_prefixes=False)
    assert sum(len(g.prefix) for g in shared) > 0 and all(not g.prefix for g in whole)
    pad = pad_token_id(tokenizer)

    gradients = []
    margins = []
    for groups in (shared, whole):
        model.zero_grad()
        values, rows = ordered_margins(model, groups, answer, pad)
        values.pow(2).sum().backward()
        order = torch.argsort(rows)
        margins.append(values.detach()[order])
        gradients.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(margins[0], margins[1], atol=1e-5, rtol=1e-4)
    assert float(margins[0].std()) > 1e-4  # prompts are told apart
    assert len(gradients[0]) == len(gradients[1]) > 0
    for shared_grad, whole_grad in zip(*gradients, strict=True):
        torch.testing.assert_close(shared_grad, whole_grad, atol=1e-5, rtol=1e-4)

    merged = model.merge_and_unload()
    scores = PromptScorer(merged, tokenizer).score_prompts(data.prompts)
    torch.testing.assert_close(torch.sigmoid(margins[0]), torch.tensor(scores), atol=1e-5, rtol=1e-4)
    assert np.isfinite(scores).all()


def test_cached_trunk_gives_the_full_pass_margins_and_gradients(tiny_llama_dir: Path) -> None:
    model = lora_model(tiny_llama_dir, layers=[1])  # layer 0 frozen: the trunk
    _, tokenizer = load_causal_lm(tiny_llama_dir, device="cpu")
    answer, pad = find_answer_tokens(tokenizer), pad_token_id(tokenizer)
    groups = prefix_groups(tokenizer, prompt_set())
    assert frozen_layers(model) == 1
    trunk = compute_trunk(model, groups, pad, start=1, batch_size=3)  # other batches than below
    assert len(trunk.rests) == len(prompt_set()) and not any(t.requires_grad for t in trunk.rests.values())

    margins, gradients = [], []
    for cached in (trunk, None):
        model.zero_grad()
        values, rows = ordered_margins(model, groups, answer, pad, cached)
        values.pow(2).sum().backward()
        margins.append(values.detach()[torch.argsort(rows)])
        gradients.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(margins[0], margins[1], atol=1e-5, rtol=1e-4)
    assert len(gradients[0]) == len(gradients[1]) > 0
    for cached_grad, full_grad in zip(*gradients, strict=True):
        torch.testing.assert_close(cached_grad, full_grad, atol=1e-5, rtol=1e-4)
