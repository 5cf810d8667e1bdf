"""The trained binary codes of every known user and item, and code-only scoring (no torch needed).

A codes directory (written by `binllm codes train`) holds `codes.parquet` (columns kind "user"/"item", id
int64, code uint64; bit order as `model_store.contract.bincode.pack_bits`: first code element = most
significant bit) and `codebook.json` (bits, scale, bias, the unknown user/item codes and the version).
Scoring uses nothing else: score(u, i) = sigmoid(scale * <c_u, c_i> + bias) with codes read as +-1.

Unknown ids: an id the encoder never saw in train gets the learned "unknown" code of its side (BinMF's
shared row 0, trained by id dropout: the code of an average user or item). `user_code` / `item_code`
still return None for such ids, so a caller that wants the prompt to say "no code" can; the unknown codes
are `unknown_user_code` / `unknown_item_code`.

    python -c "from model_store.codes.codebook import load_codes; b = load_codes('artifacts/codes'); print(b.version, b.user_code(1))"
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model_store.contract.fusion import CodeScore
from model_store.errors import DataFormatError

CODES_FILENAME = "codes.parquet"
CODEBOOK_FILENAME = "codebook.json"
MAX_BITS = 64  # codes are stored as uint64
_CODES_SCHEMA = pa.schema(
    [
        pa.field("kind", pa.string(), nullable=False),
        pa.field("id", pa.int64(), nullable=False),
        pa.field("code", pa.uint64(), nullable=False),
    ]
)


def pack_signs(signs: np.ndarray) -> np.ndarray:
    """(N, bits) array of +-1 (or 1/0) -> (N,) uint64; first column = most significant bit (as `pack_bits`)."""
    n, bits = signs.shape
    if bits > MAX_BITS:
        raise ValueError(f"at most {MAX_BITS} bits fit a uint64 code, got {bits}")
    weights = np.left_shift(np.uint64(1), np.arange(bits - 1, -1, -1, dtype=np.uint64))  # (bits,)
    ones = (signs > 0).astype(np.uint64)  # (N, bits)
    return (ones * weights).sum(axis=1, dtype=np.uint64) if n else np.zeros(0, dtype=np.uint64)


def unpack_signs(codes: np.ndarray, bits: int) -> np.ndarray:
    """(N,) uint64 -> (N, bits) float32 of +-1, the inverse of `pack_signs`."""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)  # (bits,)
    ones = (codes.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)  # (N, bits)
    return ones.astype(np.float32) * 2.0 - 1.0


def find_ids(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions of `wanted` in sorted `ids`, -1 where absent."""
    pos = np.clip(np.searchsorted(ids, wanted), 0, max(ids.size - 1, 0))
    found = (ids[pos] == wanted) if ids.size else np.zeros(wanted.shape, dtype=bool)
    return np.where(found, pos, -1)


@dataclass(frozen=True)
class CodeBook:
    """Codes of known users and items (ids sorted), the two unknown codes and the score's scale and bias."""

    bits: int
    user_ids: np.ndarray  # (U,) int64, sorted
    user_codes: np.ndarray  # (U,) uint64
    item_ids: np.ndarray  # (I,) int64, sorted
    item_codes: np.ndarray  # (I,) uint64
    unknown_user_code: int
    unknown_item_code: int
    scale: float
    bias: float
    version: str = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.bits <= MAX_BITS:
            raise ValueError(f"bits must be in 1..{MAX_BITS}, got {self.bits}")
        for ids in (self.user_ids, self.item_ids):
            if ids.size > 1 and not bool(np.all(ids[1:] > ids[:-1])):
                raise ValueError("ids must be sorted and unique")
        object.__setattr__(self, "version", self._content_hash())

    def _content_hash(self) -> str:
        # Only the codes: the same codes under another scale still render the same prompts.
        digest = hashlib.sha256(
            f"bits={self.bits};unknown={self.unknown_user_code},{self.unknown_item_code}".encode()
        )
        for ids, codes in ((self.user_ids, self.user_codes), (self.item_ids, self.item_codes)):
            digest.update(b"|")
            digest.update(ids.astype("<i8").tobytes())
            digest.update(codes.astype("<u8").tobytes())
        return digest.hexdigest()[:12]

    def code_score(self) -> CodeScore:
        """The parameters of `score` as the service needs them (no numpy): published with every snapshot,
        so the service can answer with the codes alone when the LLM cannot."""
        return CodeScore(
            bits=self.bits,
            scale=float(self.scale),
            bias=float(self.bias),
            unknown_user_code=int(self.unknown_user_code),
            unknown_item_code=int(self.unknown_item_code),
        )

    def user_code(self, uid: int) -> int | None:
        """The user's code, or None if the encoder never saw the user."""
        pos = int(find_ids(self.user_ids, np.array([uid], dtype=np.int64))[0])
        return int(self.user_codes[pos]) if pos >= 0 else None

    def item_code(self, iid: int) -> int | None:
        """The item's code, or None if the encoder never saw the item."""
        pos = int(find_ids(self.item_ids, np.array([iid], dtype=np.int64))[0])
        return int(self.item_codes[pos]) if pos >= 0 else None

    def codes_of(self, user_ids: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(user codes, item codes), each (N,) uint64: the stored code of each id, the unknown code elsewhere."""
        users = self._lookup(self.user_ids, self.user_codes, self.unknown_user_code, user_ids)[0]
        items = self._lookup(self.item_ids, self.item_codes, self.unknown_item_code, item_ids)[0]
        return users, items

    def score(self, user_ids: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Click probabilities (N,) from codes alone, and a (N,) mask of rows with an unknown user or item."""
        users = self._lookup(self.user_ids, self.user_codes, self.unknown_user_code, user_ids)  # (N,), (N,)
        items = self._lookup(self.item_ids, self.item_codes, self.unknown_item_code, item_ids)  # (N,), (N,)
        dot = (unpack_signs(users[0], self.bits) * unpack_signs(items[0], self.bits)).sum(axis=1)  # (N,)
        logits = self.scale * dot.astype(np.float64) + self.bias  # (N,)
        return 1.0 / (1.0 + np.exp(-logits)), users[1] | items[1]

    def _lookup(
        self, ids: np.ndarray, codes: np.ndarray, unknown: int, wanted: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        pos = find_ids(ids, np.asarray(wanted, dtype=np.int64))  # (N,)
        missing = pos < 0
        picked = codes[np.maximum(pos, 0)] if codes.size else np.zeros(pos.shape, dtype=np.uint64)
        return np.where(missing, np.uint64(unknown), picked).astype(np.uint64), missing


def write_codes(book: CodeBook, directory: str | Path) -> None:
    """Write `codes.parquet` and `codebook.json` into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "kind": ["user"] * book.user_ids.size + ["item"] * book.item_ids.size,
            "id": np.concatenate([book.user_ids, book.item_ids]).astype(np.int64),
            "code": np.concatenate([book.user_codes, book.item_codes]).astype(np.uint64),
        },
        schema=_CODES_SCHEMA,
    )
    pq.write_table(table, directory / CODES_FILENAME)
    header = {
        "bits": book.bits,
        "scale": book.scale,
        "bias": book.bias,
        "unknown_user_code": book.unknown_user_code,
        "unknown_item_code": book.unknown_item_code,
        "n_users": int(book.user_ids.size),
        "n_items": int(book.item_ids.size),
        "version": book.version,
    }
    (directory / CODEBOOK_FILENAME).write_text(json.dumps(header, indent=2) + "\n")


def load_codes(directory: str | Path) -> CodeBook:
    """Read a codes directory; refuses files whose codes do not match the recorded version."""
    directory = Path(directory)
    for name in (CODEBOOK_FILENAME, CODES_FILENAME):
        if not (directory / name).is_file():
            raise DataFormatError(directory / name, None, "file not found; not a codes directory")
    header = json.loads((directory / CODEBOOK_FILENAME).read_text())
    table = pq.read_table(directory / CODES_FILENAME).cast(_CODES_SCHEMA)
    kinds = np.asarray(table.column("kind").to_pylist())
    ids = table.column("id").to_numpy()
    codes = table.column("code").to_numpy()
    sides = {}
    for kind in ("user", "item"):
        rows = kinds == kind
        order = np.argsort(ids[rows], kind="stable")
        sides[kind] = (ids[rows][order].astype(np.int64), codes[rows][order].astype(np.uint64))
    book = CodeBook(
        bits=int(header["bits"]),
        user_ids=sides["user"][0],
        user_codes=sides["user"][1],
        item_ids=sides["item"][0],
        item_codes=sides["item"][1],
        unknown_user_code=int(header["unknown_user_code"]),
        unknown_item_code=int(header["unknown_item_code"]),
        scale=float(header["scale"]),
        bias=float(header["bias"]),
    )
    if book.version != header["version"]:
        reason = f"codes hash to {book.version} but {CODEBOOK_FILENAME} says {header['version']}"
        raise DataFormatError(directory / CODES_FILENAME, None, reason)
    return book
