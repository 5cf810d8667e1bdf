"""CoLLM's encoding: each side's collaborative embedding, projected into the LLM's token space, as one soft token.

CoLLM (Zhang et al., TKDE 2025) maps a user's and an item's CF embedding through a small MLP (the projector)
to one input embedding each, placed where BinLLM writes the codes. Here the prompt text carries the embedding
itself, packed into a marker `<|emb:PACKED|>` (`model_store.contract.prompts.embedding_marker`), so the text
stays the whole input on every path. `encode_prompts` tokenises a batch of prompts, gathers the distinct
packed embeddings into a table [S, d] and writes each marker as the token id `-(K + 1)` of its row K: an id
no tokenizer makes. `SoftTokenEmbedding` replaces the model's input embedding: ids >= 0 are looked up as
before, negative ids are `projector(table[K])`. Everything keyed on token ids (prefix grouping, the shared
key/value cache, batching) works unchanged within one call: a user's embedding is one id shared by all of
that user's prompts, like a code's digits.

The CF embeddings are the codes directory's (`model_store.codes.features.CollabFeatures`): the BinMF
encoder's values before the sign.

    python -c "from model_store.llm.soft_tokens import *; print(Projector(32, 576))"
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from model_store.contract.prompts import EMBEDDING_PATTERN, unpack_embedding

# Beside an adapter, in a checkpoint and in an exported model; in a folder of its own, since vLLM loads every
# *.safetensors file at the top of a model directory as the model's weights.
PROJECTOR_PATH = Path("projector") / "model.safetensors"
HIDDEN_PER_INPUT = 10  # CoLLM's MLP: input width x 10 hidden units, ReLU, then the LLM's width


def soft_token(row: int) -> int:
    """The token id of the soft token for row `row` of a call's table (negative: outside every vocabulary)."""
    return -(row + 1)


@dataclass(frozen=True)
class EncodedPrompts:
    """Token ids of a batch of prompts and the table their soft tokens read (None: no marker anywhere)."""

    ids: list[list[int]]
    table: torch.Tensor | None = None  # [S, d] float32: row K = the K-th distinct packed embedding


def encode_prompts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> EncodedPrompts:
    """Token ids of `texts` as the tokenizer makes them, each `<|emb:PACKED|>` becoming one soft-token id.

    The text between markers is tokenised piece by piece (special tokens with the first piece only), so a
    marker never merges with its neighbours; texts without markers come out exactly as `tokenizer(texts)`.
    Equal packed embeddings share a row, so a user's prompts share their prefix ids.
    """
    if not any(EMBEDDING_PATTERN.search(text) for text in texts):
        return EncodedPrompts([list(ids) for ids in tokenizer(list(texts))["input_ids"]])
    rows: dict[str, int] = {}
    ids = [_encode_one(tokenizer, text, rows) for text in texts]
    values = [unpack_embedding(packed) for packed in rows]
    if len({len(v) for v in values}) > 1:
        raise ValueError("the prompts' packed embeddings differ in width")
    return EncodedPrompts(ids, torch.tensor(values, dtype=torch.float32))


def _encode_one(tokenizer: PreTrainedTokenizerBase, text: str, rows: dict[str, int]) -> list[int]:
    ids: list[int] = []
    start = 0
    for match in EMBEDDING_PATTERN.finditer(text):
        ids += _piece(tokenizer, text[start : match.start()], first=start == 0)
        ids.append(soft_token(rows.setdefault(match.group(1), len(rows))))
        start = match.end()
    return ids + _piece(tokenizer, text[start:], first=start == 0)


def _piece(tokenizer: PreTrainedTokenizerBase, text: str, *, first: bool) -> list[int]:
    if not text and not first:
        return []
    return list(tokenizer(text, add_special_tokens=first)["input_ids"])


class Projector(nn.Module):
    """CoLLM's 2-layer MLP from a CF embedding [.., d_in] to an LLM input embedding [.., d_model]."""

    def __init__(self, d_in: int, d_model: int, hidden: int | None = None) -> None:
        super().__init__()
        self.d_in, self.d_model = d_in, d_model
        self.hidden = hidden or HIDDEN_PER_INPUT * d_in
        self.mlp = nn.Sequential(nn.Linear(d_in, self.hidden), nn.ReLU(), nn.Linear(self.hidden, d_model))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)

    def save(self, directory: Path) -> None:
        """Write `PROJECTOR_PATH` (its shape in the file's metadata) under an adapter, checkpoint or model."""
        path = Path(directory) / PROJECTOR_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}
        shape = {"d_in": self.d_in, "d_model": self.d_model, "hidden": self.hidden}
        save_file(tensors, str(path), metadata={"projector": json.dumps(shape)})

    def load(self, directory: Path) -> bool:
        """Read weights saved by `save`, in place; False (weights untouched) when there are none."""
        path = Path(directory) / PROJECTOR_PATH
        if not path.is_file():
            return False
        device = next(self.parameters()).device
        self.load_state_dict(load_file(str(path), device=str(device)))
        return True

    @classmethod
    def from_dir(cls, directory: str | Path) -> Projector:
        """A projector rebuilt from `save`'s file alone."""
        path = Path(directory) / PROJECTOR_PATH
        with safe_open(str(path), framework="pt") as handle:
            shape = json.loads((handle.metadata() or {})["projector"])
        projector = cls(shape["d_in"], shape["d_model"], shape["hidden"])
        projector.load(Path(directory))
        return projector


def has_projector(directory: str | Path) -> bool:
    """Whether an adapter, checkpoint or model directory holds a CoLLM projector."""
    return (Path(directory) / PROJECTOR_PATH).is_file()


class SoftTokenEmbedding(nn.Module):
    """The model's input embedding with soft tokens: id >= 0 as before, id -(K+1) = projector(table[K])."""

    table: torch.Tensor

    def __init__(self, base: nn.Embedding, projector: Projector) -> None:
        super().__init__()
        self.base = base
        self.projector = projector
        self.register_buffer("table", torch.zeros(0, projector.d_in), persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        """The token embedding matrix (tied output heads and Hugging Face helpers read it)."""
        return self.base.weight

    @property
    def num_embeddings(self) -> int:
        return self.base.num_embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        soft = ids < 0
        out = self.base(ids.clamp(min=0))
        if not bool(soft.any()):
            return out
        rows = -ids[soft] - 1
        if int(rows.max()) >= self.table.shape[0]:
            raise IndexError(
                f"soft token row {int(rows.max())} is outside the table of {self.table.shape[0]}"
            )
        dtype = next(self.projector.parameters()).dtype
        features = self.table[rows].to(device=out.device, dtype=dtype)
        projected = self.projector(features).to(out.dtype)  # [n_soft, E]
        return out.index_put(soft.nonzero(as_tuple=True), projected)


def decoder_of(model: Any) -> Any:
    """The module holding `embed_tokens` (a Llama-family decoder), through a peft wrapper if any."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def install_projector(model: Any, projector: Projector) -> SoftTokenEmbedding:
    """Put `projector` in front of the model's input embedding (idempotent: a second call replaces it)."""
    decoder = decoder_of(model)
    embedding = decoder.embed_tokens
    base = embedding.base if isinstance(embedding, SoftTokenEmbedding) else embedding
    device = base.weight.device
    wrapper = SoftTokenEmbedding(base, projector.to(device))
    decoder.embed_tokens = wrapper
    return wrapper


def soft_embedding(model: Any) -> SoftTokenEmbedding | None:
    """The installed soft-token embedding, or None for a codes-only model."""
    embedding = decoder_of(model).embed_tokens
    return embedding if isinstance(embedding, SoftTokenEmbedding) else None


def remove_projector(model: Any) -> None:
    """Restore the plain input embedding (before a merge and save: the projector is saved on its own)."""
    decoder = decoder_of(model)
    if isinstance(decoder.embed_tokens, SoftTokenEmbedding):
        decoder.embed_tokens = decoder.embed_tokens.base


@contextmanager
def embedding_table(model: Any, table: torch.Tensor | None) -> Iterator[None]:
    """The rows the soft tokens of the prompts scored inside read (None: leave the installed table)."""
    embedding = soft_embedding(model)
    if embedding is None or table is None:
        yield
        return
    previous = embedding.table
    embedding.table = table.to(embedding.base.weight.device)
    try:
        yield
    finally:
        embedding.table = previous
