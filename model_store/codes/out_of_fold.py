"""Out-of-fold codes: for each train row, codes from a BinMF model that never saw that row.

Why: the residual objective (`binllm llm tune --objective residual`) trains an LLM to add to the codes' own
score, on the train rows. But the codes were fitted on those very rows: on ML-1M they rank the train rows at
AUC 0.85 and the later `valid` rows at 0.74. On in-sample codes the residual finds the label already explained
and learns nothing the codes miss, and the LLM learns to trust the codes in its prompt more than they deserve
on new rows. Stacking's answer: split the train rows into K folds, fit one codes model per fold on the other
K - 1, and give each row the codes of the model that never saw it, in its prompt and in the skip connection.

A BinMF model's bits mean something only within that model: another fit (another fold) learns the same
directions in another order and sign. `align_bits` permutes and flips each fold model's bits onto the served
codebook's (the assignment that maximises the agreement of each bit over every id both know), so the LLM reads
one code language in tuning and in serving; the scores do not change (the inner product of two codes is the
same under one permutation and flip of both).

    binllm codes oof --codes artifacts/codes --train ../shared/data/ml-1m-collm/train_ood2.jsonl.gz \\
        --valid ../shared/data/ml-1m-collm/valid_small_ood2.jsonl.gz --out artifacts/codes-oof
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import roc_auc_score

from model_store.codes.codebook import CodeBook, load_codes, pack_signs, unpack_signs, write_codes
from model_store.codes.evaluation import Interactions
from model_store.errors import DataFormatError

FOLDS_FILENAME = "folds.json"


def assign_folds(n_rows: int, folds: int, seed: int) -> np.ndarray:
    """[n_rows] fold of each row, uniform and seeded."""
    if folds < 2:
        raise ValueError(f"out-of-fold codes need at least 2 folds, got {folds}")
    return np.random.default_rng(seed).integers(0, folds, size=n_rows)


def fingerprint(data: Interactions) -> str:
    """A hash of the rows (user, item, label, in order): the folds belong to exactly this split."""
    digest = hashlib.sha256()
    for column in (data.user_ids.astype("<i8"), data.item_ids.astype("<i8"), data.labels.astype("<f4")):
        digest.update(column.tobytes())
    return digest.hexdigest()[:16]


def _signs_of(book: CodeBook, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """[U + I, bits] +-1: the book's codes of these ids (its unknown codes where it lacks one)."""
    return unpack_signs(np.concatenate(book.codes_of(user_ids, item_ids)), book.bits).astype(np.float64)


def bit_alignment(book: CodeBook, reference: CodeBook) -> tuple[np.ndarray, np.ndarray]:
    """(source bit, sign) per reference bit [bits], [bits]: the permutation and flips of `book`'s bits that
    agree best with `reference`'s over every id `reference` knows (Hungarian assignment on |correlation|)."""
    if book.bits != reference.bits:
        raise ValueError(f"cannot align {book.bits}-bit codes to {reference.bits}-bit codes")
    ref = _signs_of(reference, reference.user_ids, reference.item_ids)  # [M, bits]
    own = _signs_of(book, reference.user_ids, reference.item_ids)  # [M, bits]
    agreement = (ref - ref.mean(0)).T @ (own - own.mean(0))  # [bits, bits] covariance, reference x book
    spread = np.outer(ref.std(0), own.std(0)) * len(ref) + 1e-12
    correlation = agreement / spread
    rows, source = linear_sum_assignment(-np.abs(correlation))
    signs = np.where(correlation[rows, source] < 0, -1.0, 1.0)
    return source, signs


def reorder_bits(book: CodeBook, source: np.ndarray, signs: np.ndarray) -> CodeBook:
    """`book` with bit j taken from its bit `source[j]` times `signs[j]`, in every code (unknown ones too): the
    same model, scores unchanged, written in another bit order and sign."""

    def moved(codes: np.ndarray) -> np.ndarray:
        return pack_signs(unpack_signs(np.asarray(codes, dtype=np.uint64), book.bits)[:, source] * signs)

    unknown = moved(np.array([book.unknown_user_code, book.unknown_item_code], dtype=np.uint64))
    return CodeBook(
        bits=book.bits,
        user_ids=book.user_ids,
        user_codes=moved(book.user_codes),
        item_ids=book.item_ids,
        item_codes=moved(book.item_codes),
        unknown_user_code=int(unknown[0]),
        unknown_item_code=int(unknown[1]),
        scale=book.scale,
        bias=book.bias,
    )


def align_bits(book: CodeBook, reference: CodeBook) -> CodeBook:
    """`book` with its bits permuted and flipped onto `reference`'s (`bit_alignment`): the same scores, the
    reference's bit meanings."""
    return reorder_bits(book, *bit_alignment(book, reference))


@dataclass(frozen=True)
class OutOfFoldCodes:
    """K aligned codebooks and the fold of every train row: row r reads `books[fold_of_row[r]]`."""

    books: list[CodeBook]
    fold_of_row: np.ndarray  # [N] int
    train_fingerprint: str
    metrics: dict[str, Any]

    def for_row(self, row: int) -> CodeBook:
        """The codebook of the model that never saw train row `row`."""
        return self.books[int(self.fold_of_row[row])]

    def check_split(self, table: pa.Table) -> None:
        """Refuse a train split other than the one the folds were drawn on (rows would get others' codes)."""
        found = fingerprint(Interactions.from_table(table))
        if table.num_rows != self.fold_of_row.size or found != self.train_fingerprint:
            raise ValueError(
                f"the out-of-fold codes were made for another train split ({self.fold_of_row.size} rows, "
                f"fingerprint {self.train_fingerprint}); this one has {table.num_rows} rows, fingerprint {found}"
            )


def fit_out_of_fold(
    fit_codes: Callable[[Interactions], CodeBook],
    train: Interactions,
    reference: CodeBook,
    folds: int = 5,
    seed: int = 0,
) -> OutOfFoldCodes:
    """One codes model per fold (`fit_codes` on the other folds' rows), aligned to `reference` (the served
    codes). Metrics: the codes' AUC on the train rows in-sample (`reference`) and out of fold, and per fold the
    share of bits its aligned codes share with the reference's."""
    fold_of_row = assign_folds(train.labels.size, folds, seed)
    books, out_of_fold = [], np.zeros(train.labels.size)
    agreement = []
    ids = (reference.user_ids, reference.item_ids)
    reference_signs = _signs_of(reference, *ids)  # [M, bits]
    for fold in range(folds):
        kept = fold_of_row != fold
        book = align_bits(
            fit_codes(Interactions(train.user_ids[kept], train.item_ids[kept], train.labels[kept])), reference
        )
        books.append(book)
        held = ~kept
        out_of_fold[held] = book.score(train.user_ids[held], train.item_ids[held])[0]
        agreement.append(float((_signs_of(book, *ids) == reference_signs).mean()))
    in_sample = reference.score(train.user_ids, train.item_ids)[0]
    metrics = {
        "folds": folds,
        "seed": seed,
        "train_auc_in_sample": float(roc_auc_score(train.labels, in_sample)),
        "train_auc_out_of_fold": float(roc_auc_score(train.labels, out_of_fold)),
        "bits_shared_with_reference": [round(share, 4) for share in agreement],
        "reference_version": reference.version,
    }
    return OutOfFoldCodes(books, fold_of_row, fingerprint(train), metrics)


def write_out_of_fold(codes: OutOfFoldCodes, directory: str | Path) -> None:
    """`fold<k>/` codes directories (as `binllm codes train` writes them) and `folds.json`."""
    directory = Path(directory)
    for fold, book in enumerate(codes.books):
        write_codes(book, directory / f"fold{fold}")
    header = {
        **codes.metrics,
        "train_rows": int(codes.fold_of_row.size),
        "train_fingerprint": codes.train_fingerprint,
        "fold_of_row": codes.fold_of_row.astype(int).tolist(),
    }
    (directory / FOLDS_FILENAME).write_text(json.dumps(header) + "\n", encoding="utf-8")


def load_out_of_fold(directory: str | Path) -> OutOfFoldCodes:
    """Read what `write_out_of_fold` wrote."""
    directory = Path(directory)
    path = directory / FOLDS_FILENAME
    if not path.is_file():
        raise DataFormatError(
            path, None, "file not found; not an out-of-fold codes directory (binllm codes oof)"
        )
    header = json.loads(path.read_text(encoding="utf-8"))
    fold_of_row = np.asarray(header.pop("fold_of_row"), dtype=np.int64)
    books = [load_codes(directory / f"fold{fold}") for fold in range(int(header["folds"]))]
    fingerprint_ = str(header.pop("train_fingerprint"))
    return OutOfFoldCodes(books, fold_of_row, fingerprint_, header)
