"""PromptScorer: batching and prefix sharing change the cost of scoring, never the scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_store.contract.prompts import (
    CandidateItem,
    PromptStyle,
    UserContext,
    render_candidate_suffix,
    render_prompt,
    render_user_prefix,
)
from model_store.llm.answer import find_answer_tokens
from model_store.llm.grouped import common_prefix_length
from model_store.llm.models import load_causal_lm
from model_store.llm.scorer import PromptScorer

STYLE = PromptStyle()
USER = UserContext(history_titles=("Heat (1995)", "Ran (1985)", "Fargo (1996)"), code=0xDEADBEEF)
ITEMS = (
    CandidateItem(title="Toy Story (1995)", code=1),
    CandidateItem(title="M", code=0xFFFFFFFF),
    CandidateItem(title="Star Wars: Episode IV - A New Hope (1977)", code=0x12345678),
    CandidateItem(title="Paris, Texas (1984)", code=0x0F0F0F0F),
)


@pytest.fixture(scope="module")
def scorer(tiny_llama_dir: Path) -> PromptScorer:
    return PromptScorer(*load_causal_lm(tiny_llama_dir, device="cpu"))


def one_by_one(scorer: PromptScorer, prompts: list[str]) -> list[float]:
    return [scorer.score_prompts([prompt])[0] for prompt in prompts]


def test_common_prefix_length_counts_shared_leading_tokens() -> None:
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[5, 6], [5, 6]]) == 2
    assert common_prefix_length([[1], [2]]) == 0
    assert common_prefix_length([]) == 0


def test_batched_scores_equal_unbatched_scores_across_padding(scorer: PromptScorer) -> None:
    prompts = [render_prompt(USER, item, STYLE) for item in ITEMS]
    prompts.append(render_prompt(UserContext(), ITEMS[0], STYLE))  # text-only wording: much shorter
    lengths = {len(ids) for ids in scorer.tokenizer(prompts)["input_ids"]}
    assert len(lengths) > 2  # padding is really exercised
    alone = one_by_one(scorer, prompts)
    batched = scorer.score_prompts(prompts, batch_size=3)
    assert batched == pytest.approx(alone, abs=1e-5)
    assert max(alone) - min(alone) > 1e-4  # the prompts are told apart, so equality means something
    assert all(0.0 < score < 1.0 for score in batched)


def test_score_prompts_keeps_input_order(scorer: PromptScorer) -> None:
    prompts = [render_prompt(USER, item, STYLE) for item in ITEMS]
    forward = scorer.score_prompts(prompts, batch_size=2)
    backward = scorer.score_prompts(prompts[::-1], batch_size=2)
    assert backward == pytest.approx(forward[::-1], abs=1e-5)


def test_prefix_sharing_equals_independent_scoring_for_suffixes_of_different_lengths(
    scorer: PromptScorer,
) -> None:
    prefix = render_user_prefix(USER, STYLE, with_codes=True)
    suffixes = [render_candidate_suffix(item, STYLE, with_codes=True) for item in ITEMS]
    rests = [len(scorer.tokenizer(prefix + suffix)["input_ids"]) for suffix in suffixes]
    assert len(set(rests)) > 1
    shared = scorer.score_with_prefix(prefix, suffixes, batch_size=3)
    assert shared == pytest.approx(one_by_one(scorer, [prefix + s for s in suffixes]), abs=1e-4)


def test_prefix_sharing_trusts_tokens_not_the_text_boundary(scorer: PromptScorer) -> None:
    prefix = render_user_prefix(USER, STYLE, with_codes=False)
    assert prefix.endswith(" ")
    suffixes = [render_candidate_suffix(item, STYLE, with_codes=False) for item in ITEMS]
    prefix_ids = scorer.tokenizer(prefix)["input_ids"]
    full_ids = scorer.tokenizer(prefix + suffixes[0])["input_ids"]
    assert full_ids[: len(prefix_ids)] != prefix_ids  # BPE merged the trailing space with the opening quote
    shared = scorer.score_with_prefix(prefix, suffixes)
    assert shared == pytest.approx(one_by_one(scorer, [prefix + s for s in suffixes]), abs=1e-4)


def test_prefix_sharing_handles_a_suffix_that_is_empty_or_a_single_character(scorer: PromptScorer) -> None:
    prompt = render_prompt(USER, ITEMS[0], STYLE)
    prefix, suffixes = prompt[:-1], [prompt[-1], "", ": and more?" + prompt[-9:]]
    shared = scorer.score_with_prefix(prefix, suffixes)
    assert shared == pytest.approx(one_by_one(scorer, [prefix + s for s in suffixes]), abs=1e-4)


def test_prefix_sharing_of_no_suffixes_is_empty(scorer: PromptScorer) -> None:
    assert scorer.score_with_prefix("anything", []) == []


def test_several_users_in_one_pass_equal_each_user_alone(scorer: PromptScorer) -> None:
    users = [USER, USER.model_copy(update={"history_titles": USER.history_titles[:1]}), USER]
    groups = []
    for index, user in enumerate(users):
        codes = index != 2  # the third user without codes: another prefix of another length
        suffixes = [render_candidate_suffix(item, STYLE, with_codes=codes) for item in ITEMS[index:]]
        groups.append((render_user_prefix(user, STYLE, with_codes=codes), suffixes))
    groups.append(("nobody", []))
    together = scorer.score_groups(groups, batch_size=4)  # rows of two users share a batch
    assert [len(scores) for scores in together] == [len(suffixes) for _, suffixes in groups]
    for (prefix, suffixes), scores in zip(groups, together, strict=True):
        assert scores == pytest.approx(one_by_one(scorer, [prefix + s for s in suffixes]), abs=1e-4)


@pytest.mark.slow
def test_smollm2_score_is_sigmoid_of_yes_minus_no_logit_at_the_last_token(smollm2_dir: Path) -> None:
    model, tokenizer = load_causal_lm(smollm2_dir, device="cpu")
    scorer = PromptScorer(model, tokenizer)
    prompt = render_prompt(USER, ITEMS[0], STYLE)
    (score,) = scorer.score_prompts([prompt])
    answer = find_answer_tokens(tokenizer)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        last = model(input_ids=ids).logits[0, -1]  # [V]
    by_hand = 1.0 / (1.0 + torch.exp(-(last[answer.yes_id] - last[answer.no_id]))).item()
    assert 0.0 < score < 1.0
    assert score == pytest.approx(by_hand, abs=1e-5)
    prefix = render_user_prefix(USER, STYLE, with_codes=True)
    (shared,) = scorer.score_with_prefix(prefix, [prompt.removeprefix(prefix)])
    assert shared == pytest.approx(score, abs=1e-4)
