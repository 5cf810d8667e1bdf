"""Fit the served blend of the LLM's P(Yes) and the code score on a validation split (contract/fusion.py).

A 135M model tuned on a few thousand prompts ranks below its own codes; a logistic regression of the click on
(LLM margin, code logit), one for warm rows (both own codes in the prompt) and one for cold rows (text-only,
or a learned unknown code), three numbers each, can beat both. The fit uses `valid_small` (the papers'
model-selection split); the weights go into the exported model's `binllm.json`, so `binllm llm eval` and
`/predict` apply the very same blend.

    binllm llm blend --model artifacts/llm/merged --codes artifacts/codes \\
        --split ../shared/data/ml-1m-collm/valid_small_ood2.jsonl.gz
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from model_store.codes.codebook import CodeBook
from model_store.contract.fusion import CodeScore, ScoreFusion, logit
from model_store.contract.snapshot import MANIFEST_FILENAME, ModelManifest
from model_store.errors import BinllmJobError
from model_store.llm.evaluate import SplitScores
from model_store.llm.tune import read_adapter_card
from model_store.llm.tune_config import ADAPTER_CARD_FILENAME, AdapterCard

IDENTITY = (1.0, 0.0, 0.0)  # the blend that returns P(Yes) unchanged
# Fewest rows a blend is written from without --force: below a few hundred rows the two weights and the bias
# follow the sample's noise (a 32-row fit served scores of 0.99998), and the service would rank by that.
MIN_FIT_ROWS = 300


def refuse_small_fit(n_rows: int, classes: Collection[int] | None, *, force: bool) -> None:
    """Raise (unless `force`) when `n_rows` rows, or one class of labels, are too little for a served blend.

    `classes` is None where only the row count is known yet (a --max-samples below the minimum).
    """
    if force:
        return
    if n_rows < MIN_FIT_ROWS:
        raise BinllmJobError(
            f"the blend would be fitted on {n_rows} rows, fewer than {MIN_FIT_ROWS}: its weights would follow "
            f"the sample's noise; give --max-samples {MIN_FIT_ROWS} or more, or --force to write it anyway"
        )
    if classes is not None and len(set(classes)) < 2:
        raise BinllmJobError(
            f"all {n_rows} fit rows have label {next(iter(classes))}: a blend needs clicks and non-clicks; "
            "fit on another split, or --force to write it anyway"
        )


def code_score_of(book: CodeBook) -> CodeScore:
    """The codes' own score parameters, as the service needs them (no numpy)."""
    return CodeScore(
        bits=book.bits,
        scale=float(book.scale),
        bias=float(book.bias),
        unknown_user_code=int(book.unknown_user_code),
        unknown_item_code=int(book.unknown_item_code),
    )


def _fit(features: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """(w_llm, w_code, bias) of a plain (unpenalised) logistic regression; identity if it cannot be fitted."""
    if len(labels) < 10 or len(set(labels.tolist())) < 2:
        return IDENTITY
    model = LogisticRegression(C=1e6, max_iter=1000).fit(features, labels)
    w_llm, w_code = (float(w) for w in model.coef_[0])
    return (w_llm, w_code, float(model.intercept_[0]))


def fit_fusion(scores: SplitScores, book: CodeBook, fitted_on: str) -> ScoreFusion:
    """The blend fitted on one split's P(Yes) (see `score_split`) and the codes' logits."""
    code_score = code_score_of(book)
    data = scores.data
    margins = np.array([logit(float(p)) for p in scores.p_yes])  # [N]
    code_logits = np.array(
        [
            code_score.logit(book.user_code(u), book.item_code(i))
            for u, i in zip(data.uids, data.iids, strict=True)
        ]
    )  # [N]
    features = np.stack([margins, code_logits], axis=1)  # [N, 2]
    labels = np.asarray(data.labels)
    warm = scores.warm
    return ScoreFusion(
        codes=code_score,
        warm=_fit(features[warm], labels[warm]),
        cold=_fit(features[~warm], labels[~warm]),
        fitted_on=fitted_on,
    )


def write_fusion(model_dir: Path, fusion: ScoreFusion, metrics: dict[str, Any]) -> ModelManifest:
    """Declare the blend in the exported model's `binllm.json` (rewritten whole, then renamed into place)."""
    path = model_dir / MANIFEST_FILENAME
    manifest = ModelManifest.model_validate_json(path.read_text(encoding="utf-8"))
    updated = manifest.model_copy(
        update={"fusion": fusion, "metrics": {**manifest.metrics, "blend_fit": metrics}}
    )
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(updated.model_dump_json(indent=1) + "\n", encoding="utf-8")
    partial.replace(path)
    return updated


def write_card_fusion(adapter_dir: Path, fusion: ScoreFusion, metrics: dict[str, Any]) -> AdapterCard:
    """Record the blend in an adapter's card, so `binllm llm export` writes it into the manifest."""
    card = read_adapter_card(adapter_dir)
    if card is None:
        raise BinllmJobError(f"{adapter_dir}: no {ADAPTER_CARD_FILENAME} (not written by `binllm llm tune`)")
    updated = card.model_copy(update={"fusion": fusion, "metrics": {**card.metrics, "blend_fit": metrics}})
    path = Path(adapter_dir) / ADAPTER_CARD_FILENAME
    path.write_text(
        json.dumps(updated.model_dump(mode="json"), indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return updated
