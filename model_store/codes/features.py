"""The codes directory's collaborative embeddings, for CoLLM's soft tokens: the BinMF encoder's pre-sign values.

CoLLM (Zhang et al., TKDE 2025) feeds a CF model's user and item embeddings to the LLM through a projector.
The embeddings here are the BinMF encoder's own: tanh(W e + b), the `bits` continuous values whose signs are
the codes (`model_store.codes.model.BinMF.relaxed_codes`). One CF model serves both encodings, so BinLLM and
CoLLM compare on the same collaborative signal (the text carries its signs, the soft token its values), and a
snapshot stores 86 characters per user and item (32 values packed, `contract.prompts.pack_embedding`). The
unknown rows (index 0 of each encoder table, trained by id dropout) give cold users and items their learned
embedding, as they give them their learned code.

    python -c "from model_store.codes.features import CollabFeatures as F; print(F.from_codes_dir('model_store/models/ml1m/codes').width)"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_store.codes.codebook import find_ids, load_codes
from model_store.contract.prompts import pack_embedding


@dataclass(frozen=True)
class CollabFeatures:
    """The BinMF encoder's pre-sign embeddings of every known user and item, and the two unknown ones, packed
    as prompts and snapshots carry them (`pack_embedding`)."""

    user_ids: np.ndarray  # (U,) int64 sorted
    item_ids: np.ndarray  # (I,) int64 sorted
    users: np.ndarray  # (1 + U, d) float32: row 0 = the unknown user, then `user_ids` order
    items: np.ndarray  # (1 + I, d) float32: row 0 = the unknown item, then `item_ids` order
    _packed: dict[tuple[str, int], str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_codes_dir(cls, directory: str | Path) -> CollabFeatures:
        """tanh(proj(embedding)) of every encoder row, keyed by the codebook's ids (same order as the codes)."""
        import torch

        from model_store.codes.model import BinMF

        book = load_codes(directory)
        encoder = BinMF.load(directory)
        with torch.no_grad():
            users = torch.tanh(encoder.user_proj(encoder.user_embedding.weight))  # (1 + U, bits)
            items = torch.tanh(encoder.item_proj(encoder.item_embedding.weight))  # (1 + I, bits)
        if users.shape[0] != 1 + book.user_ids.size or items.shape[0] != 1 + book.item_ids.size:
            raise ValueError(f"{directory}: the encoder's tables do not match its codebook's ids")
        return cls(book.user_ids, book.item_ids, users.float().numpy(), items.float().numpy())

    @property
    def width(self) -> int:
        """Values per embedding (the code width)."""
        return int(self.users.shape[1])

    def _pack(self, side: str, row: int) -> str:
        key = (side, row)
        if key not in self._packed:
            table = self.users if side == "user" else self.items
            self._packed[key] = pack_embedding(table[row].tolist())
        return self._packed[key]

    @property
    def unknown_user_embedding(self) -> str:
        return self._pack("user", 0)

    @property
    def unknown_item_embedding(self) -> str:
        return self._pack("item", 0)

    def user_embedding(self, uid: int) -> str | None:
        """The packed embedding of a known user, None for one the encoder never saw."""
        position = int(find_ids(self.user_ids, np.array([uid], dtype=np.int64))[0])
        return None if position < 0 else self._pack("user", 1 + position)

    def item_embedding(self, iid: int) -> str | None:
        """The packed embedding of a known item, None for one the encoder never saw."""
        position = int(find_ids(self.item_ids, np.array([iid], dtype=np.int64))[0])
        return None if position < 0 else self._pack("item", 1 + position)

    def every_embedding(self) -> list[str]:
        """Every packed embedding a prompt of these codes can carry: the unknown user and each known user,
        then the unknown item and each known item."""
        return [self._pack("user", row) for row in range(len(self.users))] + [
            self._pack("item", row) for row in range(len(self.items))
        ]
