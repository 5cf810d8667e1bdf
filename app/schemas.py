"""The HTTP protocol of the service: request and response bodies, nothing else.

    curl -s localhost:8000/predict -H 'content-type: application/json' \
        -d '{"user_id": "42", "item_ids": ["1193", "661"]}'

The request carries ids only; every text in a prompt comes from the published catalogue. Duplicate
`item_ids` are allowed: each position gets a score (identical ids get identical scores, computed once), so
a caller can send a slate as-is. The candidate limit (`BINLLM_MAX_CANDIDATES`) is a setting and is checked
by `app/service.py`; the hard bound below only keeps absurd bodies from being parsed.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_ID_LENGTH = 128
HARD_MAX_CANDIDATES = 4096  # the settings' own upper bound
MAX_HISTORY_IDS = 100

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]


class PredictRequest(BaseModel):
    """Score `item_ids` for `user_id`; `history_item_ids`, if given, replaces the stored history."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: Id = Field(description="A user id; unknown users are scored cold (text-only prompt).")
    item_ids: list[Id] = Field(
        min_length=1, max_length=HARD_MAX_CANDIDATES, description="Candidates, 1..max_candidates ids."
    )
    history_item_ids: list[Id] | None = Field(
        default=None,
        max_length=MAX_HISTORY_IDS,
        description="Earlier positives, oldest first; the prompt keeps the last 10 titles.",
    )


ScoreKind = Literal["p_yes", "blend", "codes"]


class ItemScore(BaseModel):
    """One candidate's score (`score`, ranked on), which kind it is, and the LLM's own P(Yes) beside it.

    `p_yes` is returned whenever the LLM scored this item, so callers can log or compare the LLM alone when
    the model blends it; it is null for an item the LLM did not score (`score_kind` 'codes').
    """

    item_id: str
    score: float = Field(ge=0.0, le=1.0, description="What to rank by; its kind is this item's `score_kind`.")
    p_yes: float | None = Field(
        ge=0.0,
        le=1.0,
        description="The LLM's plain P(Yes); equals `score` when `score_kind` is 'p_yes'; null when the LLM "
        "did not score this item. Under a 'blend' it is only the LLM's part of the score (a model tuned with "
        "the residual objective learns what its codes miss, so its P(Yes) alone is no click probability): "
        "rank and calibrate by `score`.",
    )
    score_kind: ScoreKind = Field(
        description="'p_yes' or 'blend': the LLM scored this item (as the response's `score_kind`); 'codes': "
        "the codes alone did (the LLM was down, or this item did not fit before the deadline). In an "
        "'llm_partial' answer without a blend, a codes-only item's score is its code probability times the "
        "lowest LLM-scored item's score, so it ranks below every LLM-scored item (app/cascade.py)."
    )


class PredictResponse(BaseModel):
    """Scores in request order, which ids were scored without codes (cold start), and what `score` is."""

    model_version: str
    code_version: str
    scores: list[ItemScore]
    cold: list[str] = Field(
        description="Distinct ids scored with the text-only wording, in first-seen order."
    )
    score_kind: ScoreKind = Field(
        description=(
            "'p_yes': the LLM's P(Yes); 'blend': logistic blend of P(Yes) and the code score declared in"
            " the model manifest; 'codes': the codes' own score, served when the LLM could not answer."
            " In an 'llm_partial' answer, the kind of the LLM-scored items; each item says its own."
        )
    )
    degraded: Literal["llm_unavailable", "llm_deadline", "llm_partial"] | None = Field(
        default=None,
        description=(
            "Set when the LLM did not score every item: 'llm_unavailable' (backend down or erroring) and"
            " 'llm_deadline' (nothing in time): every score is the code-only fallback; 'llm_partial': the LLM"
            " scored the candidates with the best code scores that fit before the deadline, the rest kept"
            " their code score (`score_kind` per item). Null otherwise."
        ),
    )


class ErrorDetail(BaseModel):
    """What went wrong, by whose fault (`type`), and which field (`param`) if one."""

    type: str
    message: str
    param: str | None = None


class ErrorResponse(BaseModel):
    """The one envelope of every non-2xx answer."""

    error: ErrorDetail


class ReadyResponse(BaseModel):
    """/readyz when the service answers: 'ready', or 'degraded' when the LLM backend cannot score and the
    code-only fallback answers instead (the pod still serves, so it stays in rotation)."""

    status: Literal["ready", "degraded"] = "ready"
    degraded: Literal["llm_unavailable"] | None = Field(
        default=None, description="Why answers are code-only now; null when the LLM scores."
    )
    snapshot_version: str
    backend: str
    engine: str | None = Field(
        default=None,
        description="What runs the model in process (e.g. 'torch-bfloat16', 'torch-float32'); null for vLLM.",
    )
    model_note: str | None = Field(
        default=None, description="What the served model is (tuned ML-1M, or the untuned synthetic demo)."
    )
    replicas: dict[str, bool] | None = Field(
        default=None,
        description="With several vLLM replicas: whether each (replica-0, replica-1... in the order of "
        "BINLLM_VLLM__BASE_URL) passed its readiness probe; ready while at least one does. Null otherwise.",
    )
