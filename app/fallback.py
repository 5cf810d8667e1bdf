"""The answer when the LLM cannot give one: the codes' own score, published with the snapshot, marked degraded.

BinMF codes alone score sigmoid(scale * <c_u, c_i> + bias) over +-1 codes (`contract/fusion.py: CodeScore`,
the same numbers `binllm codes eval` reports), so the service needs no model for it. A user or item without a
code is scored with the learned "unknown" code of its side (the codes' prior for ids the encoder never saw,
trained by id dropout) and listed in `cold`. The response says `"degraded": "llm_unavailable"` (backend down
or erroring) or `"llm_deadline"` (not in time), `score_kind: "codes"` and `p_yes: null`, and
`binllm_degraded_total{reason}` counts it.

    curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"user_id": "2", "item_ids": ["1"]}'
"""

from __future__ import annotations

import logging
from typing import Literal

from app import metrics
from app.errors import BinllmError, DeadlineExceededError
from app.schemas import ItemScore, PredictResponse
from model_store.contract.fusion import sigmoid
from model_store.contract.prompts import CandidateItem, UserContext
from model_store.contract.snapshot import SnapshotManifest

logger = logging.getLogger(__name__)

DegradedReason = Literal["llm_unavailable", "llm_deadline"]


def degraded_reason(exc: BinllmError) -> DegradedReason:
    """Why the LLM gave no answer, as the response's `degraded` marker says it."""
    return "llm_deadline" if isinstance(exc, DeadlineExceededError) else "llm_unavailable"


def code_probabilities(
    manifest: SnapshotManifest, user: UserContext, items: dict[str, CandidateItem]
) -> dict[str, float] | None:
    """The codes' own click probability of each candidate, or None when the snapshot published no score."""
    code_score = manifest.code_score
    if code_score is None:
        return None
    return {item_id: sigmoid(code_score.logit(user.code, item.code)) for item_id, item in items.items()}


def code_only_response(
    manifest: SnapshotManifest,
    item_ids: list[str],
    user: UserContext,
    items: dict[str, CandidateItem],
    reason: DegradedReason,
) -> PredictResponse | None:
    """The code-only answer for `item_ids` (request order), or None when the snapshot published no score."""
    by_id = code_probabilities(manifest, user, items)
    if by_id is None:
        return None
    metrics.DEGRADED.labels(reason).inc()
    metrics.ANSWERS.labels("codes_only").inc()
    return PredictResponse(
        model_version=manifest.model.model_version,
        code_version=manifest.code_version,
        scores=[ItemScore(item_id=i, score=by_id[i], p_yes=None, score_kind="codes") for i in item_ids],
        cold=[i for i, item in items.items() if user.code is None or item.code is None],
        score_kind="codes",
        degraded=reason,
    )
