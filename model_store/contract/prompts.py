"""The paper prompt templates, rendered one way for training and serving alike.

BinLLM (Zhang et al., ACL 2024) reuses CoLLM's ML-1M / Amazon-Book templates, with the collaborative
placeholders <UserID> / <TargetItemID> replaced by the binary codes written as text; the text-only
template (stage 1 of tuning, and cold start online) is TALLRec's wording from the same repositories.

Everything that depends only on the user (history titles, user code, and the fixed words up to the target
title) is rendered first by `render_user_prefix`; the per-candidate rest comes from `render_candidate_suffix`.
`render_prompt` is exactly their concatenation, so all candidates of one user share the prefix text and,
after tokenisation, a long shared token prefix: the main serving-speed lever (vLLM prefix caching, and the
in-process scorer's shared key/value cache).

Two encodings exist. `encoding="codes"` (BinLLM) writes each side's binary code as text. `encoding="embeddings"`
(CoLLM, Zhang et al., TKDE 2025) writes the side's collaborative embedding in the same place, as a marker
`<|emb:PACKED|>` (`pack_embedding`: its values as little-endian float16, base64url): the tokenizer wrapper
(`model_store.llm.soft_tokens`) turns each marker into one soft token, the model's projector applied to those
values. The prompt text stays the whole input, as with codes: tuning, eval and every serving path read the
same text, and the snapshot stores each embedding already packed. The wording is the same; only what stands
in for the code differs.

Two layouts exist. `layout="paper"` is the papers' wording, where the question words follow the target
title. `layout="serving"` (ours) moves every candidate-independent word before the candidate, so that each
candidate adds only its title, its code and the answer cue (about 24 SmolLM2 tokens with hex codes, against
about 61 for the papers' wording with bit strings): the cost that grows with the number of candidates.

The papers' prompt files contain a literal backslash-n ("\\n", two characters) before "#Answer:", an
artefact of how they were read. `answer_break="newline"` (the default) uses a real newline, which every
tokenizer we use encodes as one clean token; `answer_break="literal"` reproduces the files byte for byte.

    python -c "from model_store.contract.prompts import *; print(render_prompt(UserContext(history_titles=['Heat (1995)']), CandidateItem(title='Ran (1985)'), PromptStyle()))"
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Sequence
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from model_store.contract.bincode import DEFAULT_BITS, CodeMode, render_code

T = TypeVar("T")
Domain = Literal["movie", "book"]
AnswerBreak = Literal["newline", "literal"]
Layout = Literal["paper", "serving"]
UnknownCodes = Literal["text_only", "learned"]
Encoding = Literal["codes", "embeddings"]

MAX_HISTORY_TITLES = 10
ANSWER_CUE = "#Answer:"
EMBEDDING_PATTERN = re.compile(r"<\|emb:([A-Za-z0-9_-]+)\|>")  # one soft token: a packed CF embedding

_PLURAL: dict[str, str] = {"movie": "movies", "book": "books"}


class PromptStyle(BaseModel):
    """How prompts are written: the dataset wording, the code text form and the answer line break."""

    model_config = ConfigDict(frozen=True)

    domain: Domain = Field(default="movie", description="'movie' for ML-1M wording, 'book' for Amazon-Book.")
    code_mode: CodeMode = Field(default="binary", description="Codes as bit strings or dot-decimal.")
    bits: int = Field(default=DEFAULT_BITS, ge=8, le=64, description="Width of every code.")
    answer_break: AnswerBreak = Field(
        default="newline", description="Real newline before '#Answer:', or the papers' literal backslash-n."
    )
    layout: Layout = Field(
        default="paper",
        description="'paper': the papers' wording; 'serving': candidate-independent words first, "
        "so each candidate adds only title, code and answer cue.",
    )
    encoding: Encoding = Field(
        default="codes",
        description="'codes': each side's binary code as text (BinLLM); 'embeddings': one soft token per "
        "side, its collaborative embedding projected into the LLM's token space (CoLLM).",
    )
    unknown_codes: UnknownCodes = Field(
        default="text_only",
        description="A user or item without a code: 'text_only' = the text-only wording (the papers); "
        "'learned' = the codebook's learned unknown code of its side stands in, so the BinLLM wording "
        "and the other side's code stay in the prompt.",
    )

    @property
    def break_text(self) -> str:
        """The text between 'Answer with "Yes" or "No". ' and the answer cue."""
        return "\n" if self.answer_break == "newline" else "\\n"


class UserContext(BaseModel):
    """What a prompt says about the user: earlier positive titles (oldest first) and, if known, the code."""

    model_config = ConfigDict(frozen=True)

    history_titles: tuple[str, ...] = ()
    code: int | None = None
    embedding: str | None = Field(default=None, description="Packed CF embedding (encoding 'embeddings').")


class CandidateItem(BaseModel):
    """What a prompt says about the target item."""

    model_config = ConfigDict(frozen=True)

    title: str
    code: int | None = None
    embedding: str | None = Field(default=None, description="Packed CF embedding (encoding 'embeddings').")


def format_history(titles: Sequence[str]) -> str:
    """The last <= 10 non-empty titles, each in double quotes, joined by ', ' (oldest first)."""
    kept = [title for title in titles if title][-MAX_HISTORY_TITLES:]
    return ", ".join(f'"{title}"' for title in kept)


def fill_unknown(code: T | None, unknown: T | None, style: PromptStyle) -> T | None:
    """The code (or packed embedding) a prompt writes for one side: its own, or, when the style says
    'learned', the unknown one.

    Why: the train split of ML-1M has no cold items, and a cold row in text-only wording loses the user's
    code too; the codes model scores such rows with its learned unknown code (trained by id dropout), and
    a BinLLM that sees that code keeps the user's code and ranks cold rows (README, "The tuned ML-1M model").
    """
    if code is None and style.unknown_codes == "learned":
        return unknown
    return code


def has_feature(side: UserContext | CandidateItem, style: PromptStyle | None = None) -> bool:
    """Whether one side can be written with its collaborative feature: its code, or, for the 'embeddings'
    encoding, its packed embedding."""
    if style is not None and style.encoding == "embeddings":
        return side.embedding is not None
    return side.code is not None


def uses_codes(user: UserContext, item: CandidateItem, style: PromptStyle | None = None) -> bool:
    """BinLLM wording needs both codes (CoLLM's, both embeddings); otherwise the text-only (cold-start) one."""
    return has_feature(user, style) and has_feature(item, style)


def pack_embedding(values: Sequence[float]) -> str:
    """A CF embedding as prompt and snapshot text: little-endian float16, base64url without padding (32
    values: 86 characters); float16 keeps about 3 significant digits, plenty for tanh outputs in (-1, 1)."""
    return base64.urlsafe_b64encode(struct.pack(f"<{len(values)}e", *values)).decode("ascii").rstrip("=")


def unpack_embedding(packed: str) -> list[float]:
    """The values of `pack_embedding`'s text (ValueError when it is not one)."""
    try:
        raw = base64.urlsafe_b64decode(packed + "=" * (-len(packed) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a packed embedding: {packed[:20]!r}") from exc
    if not raw or len(raw) % 2:
        raise ValueError(f"not a packed embedding: {packed[:20]!r} ({len(raw)} bytes)")
    return list(struct.unpack(f"<{len(raw) // 2}e", raw))


def embedding_marker(packed: str) -> str:
    """The text that stands for one soft token: the marker around a packed embedding."""
    return f"<|emb:{packed}|>"


def _feature(code: int | None, embedding: str | None, style: PromptStyle, side: str) -> str:
    """What stands in the prompt for one side's collaborative information: its code as text, or the marker
    of its embedding."""
    if style.encoding == "embeddings":
        if embedding is None:
            raise ValueError(f"with_codes=True and encoding 'embeddings' need a {side} embedding")
        return embedding_marker(embedding)
    if code is None:
        raise ValueError(f"with_codes=True needs a {side} code")
    return render_code(code, style.bits, style.code_mode)


def _question_tail(style: PromptStyle) -> str:
    return f'? Answer with "Yes" or "No". {style.break_text}{ANSWER_CUE}'


def render_user_prefix(user: UserContext, style: PromptStyle, *, with_codes: bool) -> str:
    """The user-only part of the prompt, identical for every candidate of this user and wording."""
    plural = _PLURAL[style.domain]
    history = format_history(user.history_titles)
    head = f"#Question: A user has given high ratings to the following {plural}: {history}. "
    user_code = _feature(user.code, user.embedding, style, "user") if with_codes else ""
    if style.layout == "serving":
        return head + _serving_question(user_code, style)
    if with_codes:
        return (
            head + "Additionally, we have information about the user's preferences encoded in the feature "
            f"{user_code}. Using all available information, make a prediction about whether the user would "
            f"enjoy the {style.domain} titled "
        )
    return (
        head + f"Leverage the information to predict whether the user would enjoy the {style.domain} titled "
    )


def _serving_question(user_code: str, style: PromptStyle) -> str:
    """The serving layout's question words (`user_code` is the user's feature text, "" for text-only):
    everything but the candidate, ending with a real newline."""
    ask = 'Answer with "Yes" or "No".\n'
    if user_code:
        return (
            f"The user's preferences are encoded in the feature {user_code}. Using all available information, "
            f"predict whether the user would enjoy the {style.domain} below, given with its feature. {ask}"
        )
    return f"Leverage the information to predict whether the user would enjoy the {style.domain} below. {ask}"


def render_candidate_suffix(item: CandidateItem, style: PromptStyle, *, with_codes: bool) -> str:
    """The per-candidate rest of the prompt, ending with the answer cue."""
    item_code = _feature(item.code, item.embedding, style, "item") if with_codes else ""
    if style.layout == "serving":
        feature = f" {item_code}" if with_codes else ""
        return f'"{item.title}"{feature}{style.break_text}{ANSWER_CUE}'
    if with_codes:
        return f'"{item.title}" with the feature {item_code}{_question_tail(style)}'
    return f'"{item.title}"{_question_tail(style)}'


def render_prompt(
    user: UserContext, item: CandidateItem, style: PromptStyle, *, with_codes: bool | None = None
) -> str:
    """The whole prompt. `with_codes=None` picks BinLLM wording when both codes are known."""
    codes = uses_codes(user, item, style) if with_codes is None else with_codes
    return render_user_prefix(user, style, with_codes=codes) + render_candidate_suffix(
        item, style, with_codes=codes
    )
