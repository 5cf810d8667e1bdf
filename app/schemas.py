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


class ItemScore(BaseModel):
    """One candidate's click probability (`score`, ranked on) and the LLM's own P(Yes) beside it.

    `p_yes` is returned whenever the LLM answered, so callers can log or compare the LLM alone when the
    model blends it; it is null in a degraded (code-only) answer.
    """

    item_id: str
    score: float = Field(ge=0.0, le=1.0, description="The click probability; its kind is `score_kind`.")
    p_yes: float | None = Field(
        ge=0.0,
        le=1.0,
        description="The LLM's plain P(Yes); equals `score` when `score_kind` is 'p_yes'; null when the LLM "
        "did not answer (`degraded`).",
    )


class PredictResponse(BaseModel):
    """Scores in request order, which ids were scored without codes (cold start), and what `score` is."""

    model_version: str
    code_version: str
    scores: list[ItemScore]
    cold: list[str] = Field(
        description="Distinct ids scored with the text-only wording, in first-seen order."
    )
    score_kind: Literal["p_yes", "blend", "codes"] = Field(
        description=(
            "'p_yes': the LLM's P(Yes); 'blend': logistic blend of P(Yes) and the code score declared in"
            " the model manifest; 'codes': the codes' own score, served when the LLM could not answer"
        )
    )
    degraded: Literal["llm_unavailable", "llm_deadline"] | None = Field(
        default=None,
        description=(
            "Set when the LLM could not answer and the scores are the code-only fallback: "
            "'llm_unavailable' (backend down or erroring), 'llm_deadline' (not in time). Null otherwise."
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
    model_note: str | None = Field(
        default=None, description="What the served model is (tuned ML-1M, or the untuned synthetic demo)."
    )
