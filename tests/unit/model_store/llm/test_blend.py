"""The blend's fit: warm rows (both own codes) and cold rows (here: a learned unknown item code) apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from model_store.codes.codebook import CodeBook
from model_store.contract.fusion import logit
from model_store.errors import BinllmJobError
from model_store.llm.blend import IDENTITY, MIN_FIT_ROWS, code_score_of, fit_fusion, refuse_small_fit
from model_store.llm.commands import llm_app
from model_store.llm.dataset import PromptSet
from model_store.llm.evaluate import SplitScores, warm_rows

N_USERS, N_ITEMS = 40, 40  # items 0..39 have codes; items 100..139 are cold


def _book(rng: np.random.Generator) -> CodeBook:
    return CodeBook(
        bits=8,
        user_ids=np.arange(N_USERS, dtype=np.int64),
        user_codes=rng.integers(0, 256, N_USERS).astype(np.uint64),
        item_ids=np.arange(N_ITEMS, dtype=np.int64),
        item_codes=rng.integers(0, 256, N_ITEMS).astype(np.uint64),
        unknown_user_code=0b10101010,
        unknown_item_code=0b01010101,
        scale=0.4,
        bias=0.0,
    )


def test_cold_rows_get_their_own_weights_when_every_prompt_has_codes() -> None:
    """Warm clicks follow the codes, cold clicks the LLM: each triple finds its own signal."""
    rng = np.random.default_rng(7)
    book = _book(rng)
    uids = [int(u) for u in rng.integers(0, N_USERS, 4000)]
    iids = [int(i) if rng.random() < 0.5 else int(i) + 100 for i in rng.integers(0, N_ITEMS, 4000)]
    p_yes = rng.uniform(0.05, 0.95, 4000)
    data = PromptSet(prompts=[""] * 4000, prefixes=[""] * 4000, labels=[0] * 4000, uids=uids, iids=iids)
    warm = warm_rows(data, book)
    codes = code_score_of(book)
    z = np.array(
        [
            2.0 * codes.logit(book.user_code(u), book.item_code(i)) if w else 1.5 * logit(float(p))
            for u, i, p, w in zip(uids, iids, p_yes, warm, strict=True)
        ]
    )
    labels = (rng.random(4000) < 1.0 / (1.0 + np.exp(-z))).astype(int).tolist()
    data = PromptSet(prompts=data.prompts, prefixes=data.prefixes, labels=labels, uids=uids, iids=iids)
    scores = SplitScores(data, p_yes, p_yes, warm, None, {})

    fusion = fit_fusion(scores, book, fitted_on="synthetic")

    assert 0.35 < warm.mean() < 0.65
    w_llm, w_code, _ = fusion.warm
    assert abs(w_llm) < 0.3 and 1.6 < w_code < 2.4
    c_llm, c_code, _ = fusion.cold
    assert fusion.cold != IDENTITY and 1.2 < c_llm < 1.8 and abs(c_code) < 0.5


def test_a_blend_from_fewer_than_300_rows_is_refused_saying_why() -> None:
    with pytest.raises(BinllmJobError, match=r"fitted on 32 rows, fewer than 300: .* --force"):
        refuse_small_fit(32, {0, 1}, force=False)
    refuse_small_fit(32, {0, 1}, force=True)
    refuse_small_fit(MIN_FIT_ROWS, {0, 1}, force=False)


def test_a_blend_from_rows_of_one_class_is_refused_saying_why() -> None:
    with pytest.raises(
        BinllmJobError, match=r"all 400 fit rows have label 1: a blend needs clicks and non-clicks"
    ):
        refuse_small_fit(400, {1}, force=False)
    refuse_small_fit(400, {1}, force=True)


def test_the_blend_command_refuses_a_small_sample_before_loading_anything(tmp_path: Path) -> None:
    args = ["blend", "--model", str(tmp_path / "none"), "--codes", str(tmp_path / "none")]
    args += ["--split", str(tmp_path / "none.jsonl"), "--max-samples", "32"]
    result = CliRunner().invoke(llm_app, args)
    assert isinstance(result.exception, BinllmJobError)
    assert "fewer than 300" in str(result.exception)
    assert not (tmp_path / "none").exists()
