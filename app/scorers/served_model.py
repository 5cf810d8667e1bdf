"""Does the vLLM server serve the model the active snapshot names? Checked by the Yes/No token ids.

The snapshot's manifest records the answer tokens the model was tuned with (`yes_token`/`yes_token_id`,
`no_token`/`no_token_id`); the score is only P(Yes) if the server's tokenizer maps those ids to those pieces.
`POST /detokenize` (vLLM's OpenAI-compatible server) turns each id back into text on the server, which must be
the manifest's piece (byte-level `Ġ` and sentencepiece `▁` read as a space). `VllmScorer` runs this at start-up
and whenever the active snapshot's model changes (a publish, no restart), and refuses to score with a
mismatched model (the code-only fallback answers, `/readyz` says degraded). A server without `/detokenize`
cannot be checked; that is logged once and scoring goes on.

    curl -s localhost:8001/detokenize -H 'content-type: application/json' -d '{"model": "m", "tokens": [7566]}'
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from model_store.contract.snapshot import ModelManifest

Request = Callable[..., Awaitable[httpx.Response]]


class DetokenizeRequest(BaseModel):
    """Body of vLLM's `POST /detokenize`."""

    model: str
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    """vLLM's answer; only the text is read."""

    model_config = ConfigDict(extra="ignore")

    prompt: str


class CannotCheckError(Exception):
    """The server offers no usable `/detokenize`; the model cannot be checked this way."""


def piece_text(piece: str) -> str:
    """The text a tokenizer piece stands for: `ĠYes` / `▁Yes` -> ' Yes'."""
    return piece.replace("Ġ", " ").replace("▁", " ")


async def answer_token_problems(request: Request, model: str, manifest: ModelManifest) -> list[str]:
    """Why the served tokenizer disagrees with the manifest's Yes/No tokens (empty when it agrees).

    `request(method, path, json=...)` is the scorer's own call (retries, errors as `app.errors` types).
    """
    problems = []
    for token_id, piece in (
        (manifest.yes_token_id, manifest.yes_token),
        (manifest.no_token_id, manifest.no_token),
    ):
        body: dict[str, Any] = DetokenizeRequest(model=model, tokens=[token_id]).model_dump()
        reply = await request("POST", "/detokenize", json=body)
        try:
            text = DetokenizeResponse.model_validate_json(reply.content).prompt
        except ValidationError as exc:  # not vLLM's detokenize answer: this server cannot be checked
            raise CannotCheckError(f"/detokenize answered no text for token id {token_id}") from exc
        if text.strip() != piece_text(piece).strip():
            problems.append(
                f"token id {token_id} is {text!r} on the server, the snapshot's model says {piece!r}"
            )
    return problems
