"""The served click score when the LLM alone ranks below its own codes: a logistic blend of the two.

The codes alone score sigmoid(scale * <c_u, c_i> + bias), with codes read as +-1 vectors (BinMF, the codes
package); a user or item the encoder never saw uses the learned "unknown" code. The LLM scores
P(Yes) = sigmoid(margin). When a small tuned LLM ranks worse than its codes, a three-number logistic fit of
(margin, code logit) on `valid_small` can beat both. The fit is done separately for "warm" rows, prompted
with the user's and the item's own codes, and "cold" rows (the service lists them in `cold`): text-only
prompts, or prompts carrying the learned unknown code (`unknown_codes="learned"`), where the code logit only
knows the user and the LLM only the title, so the two deserve other weights. The weights are shipped in
`binllm.json` and applied identically by `binllm llm eval` and the service, which still returns the plain
P(Yes) beside the blended score.

    python -c "from model_store.contract.fusion import *; print(CodeScore(bits=32, scale=0.1, bias=0.0, \\
      unknown_user_code=0, unknown_item_code=0).logit(0xFFFFFFFF, 0xFFFFFFFF))"
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field


class CodeScore(BaseModel):
    """The codes' own score: logit = scale * <c_u, c_i> + bias over +-1 codes."""

    model_config = ConfigDict(frozen=True)

    bits: int = Field(ge=1, le=64)
    scale: float
    bias: float
    unknown_user_code: int = Field(ge=0, description="Code of a user the encoder never saw.")
    unknown_item_code: int = Field(ge=0, description="Code of an item the encoder never saw.")

    def logit(self, user_code: int | None, item_code: int | None) -> float:
        """scale * <c_u, c_i> + bias; <c_u, c_i> = bits - 2 * (number of differing bits)."""
        user = self.unknown_user_code if user_code is None else user_code
        item = self.unknown_item_code if item_code is None else item_code
        inner = self.bits - 2 * (user ^ item).bit_count()
        return self.scale * inner + self.bias


class ScoreFusion(BaseModel):
    """score = sigmoid(w_llm * margin + w_code * code_logit + b), one (w_llm, w_code, b) per wording."""

    model_config = ConfigDict(frozen=True)

    codes: CodeScore
    warm: tuple[float, float, float] = Field(
        description="(w_llm, w_code, bias) for rows prompted with the user's and the item's own codes."
    )
    cold: tuple[float, float, float] = Field(
        description="(w_llm, w_code, bias) for the other rows: text-only, or with a learned unknown code."
    )
    fitted_on: str = Field(default="", description="Where the weights were fitted (e.g. valid_small).")

    def blend(self, p_yes: float, user_code: int | None, item_code: int | None, *, warm: bool) -> float:
        """The blended click probability from the LLM's P(Yes) and the two codes (None = unknown).

        `warm`: the prompt carried both rows' own codes (not a cold row); it picks the weights.
        """
        margin = logit(p_yes)
        w_llm, w_code, bias = self.warm if warm else self.cold
        return sigmoid(w_llm * margin + w_code * self.codes.logit(user_code, item_code) + bias)


def logit(probability: float, eps: float = 1e-7) -> float:
    """log(p / (1 - p)), with p clipped to [eps, 1 - eps] so a saturated P(Yes) stays finite."""
    p = min(max(probability, eps), 1.0 - eps)
    return math.log(p / (1.0 - p))


def sigmoid(value: float) -> float:
    """1 / (1 + exp(-value)), without overflow for large |value|."""
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    z = math.exp(value)
    return z / (1.0 + z)
