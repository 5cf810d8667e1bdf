"""Per-row scores of one evaluation, kept as a CSV so that two models can be compared on the very same rows.

`binllm llm eval --report DIR` writes `DIR/scores.csv`: one line per scored row (user_id, item_id, label, the
served score, the LLM's own P(Yes), the codes alone when they can score). Two such files of the same split are
what `binllm llm compare` needs for a paired bootstrap interval of one model against another: the difference
of two whole-split AUCs is far smaller than either figure's own error, and only pairing the rows (resampling
users, both models together) tells whether it is real.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from model_store.metrics import evaluate_scores
from model_store.paired_bootstrap import paired_bootstrap

SCORES_FILENAME = "scores.csv"
COLUMNS = ("user_id", "item_id", "label", "score", "p_yes", "codes_alone")


@dataclass(frozen=True)
class RowScores:
    """One evaluation's rows: ids as text (they only identify rows), labels 0/1, scores (NaN where absent)."""

    user_ids: np.ndarray  # [N] str
    item_ids: np.ndarray  # [N] str
    labels: np.ndarray  # [N] int
    score: np.ndarray  # [N] float, what /predict returns
    p_yes: np.ndarray  # [N] float, the LLM alone
    codes_alone: np.ndarray  # [N] float, NaN when the codes could not score


def write_row_scores(
    path: str | Path,
    *,
    user_ids: ArrayLike,
    item_ids: ArrayLike,
    labels: ArrayLike,
    score: ArrayLike,
    p_yes: ArrayLike,
    codes_alone: ArrayLike | None = None,
) -> Path:
    """Write one line per row (full float precision, so a comparison sees what the model gave)."""
    n = len(np.asarray(labels))
    codes = np.full(n, np.nan) if codes_alone is None else np.asarray(codes_alone, dtype=np.float64)
    columns = [np.asarray(user_ids), np.asarray(item_ids), np.asarray(labels).astype(np.int64),
               np.asarray(score, dtype=np.float64), np.asarray(p_yes, dtype=np.float64), codes]  # fmt: skip
    if any(len(column) != n for column in columns):
        raise ValueError("every column of the row scores needs one entry per row")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for user, item, label, served, llm, alone in zip(*columns, strict=True):
            writer.writerow(
                [user, item, int(label), repr(float(served)), repr(float(llm)), repr(float(alone))]
            )
    return out


def read_row_scores(path: str | Path) -> RowScores:
    """Read a `scores.csv` (or the report directory holding one); a clear ValueError if it is not one."""
    source = Path(path)
    if source.is_dir():
        source = source / SCORES_FILENAME
    if not source.is_file():
        raise ValueError(
            f"{source} does not exist: give a scores.csv or the --report directory of `llm eval`"
        )
    with source.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader, ()))
        if header != COLUMNS:
            raise ValueError(f"{source} is not a row-scores file: its header is {header}, expected {COLUMNS}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{source} holds no rows")
    users, items, labels, score, p_yes, codes = zip(*rows, strict=True)
    return RowScores(
        user_ids=np.asarray(users),
        item_ids=np.asarray(items),
        labels=np.asarray(labels, dtype=np.int64),
        score=np.asarray(score, dtype=np.float64),
        p_yes=np.asarray(p_yes, dtype=np.float64),
        codes_alone=np.asarray(codes, dtype=np.float64),
    )


def compare_row_scores(a: RowScores, b: RowScores, *, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """B's served score against A's on the same rows: both metrics and B - A with its paired interval.

    The rows must be the same, in the same order (the same split, scored with the same --max-samples/--seed):
    anything else is a ValueError, since a "paired" interval over different rows means nothing.
    """
    if len(a.labels) != len(b.labels):
        raise ValueError(
            f"the two evaluations scored {len(a.labels)} and {len(b.labels)} rows: not the same rows"
        )
    same = (
        np.array_equal(a.user_ids, b.user_ids)
        and np.array_equal(a.item_ids, b.item_ids)
        and np.array_equal(a.labels, b.labels)
    )
    if not same:
        raise ValueError("the two evaluations scored different rows (or in another order): not comparable")
    intervals = paired_bootstrap(a.user_ids, a.labels, a.score, b.score, resamples=resamples, seed=seed)
    return {
        "a": dict(evaluate_scores(a.user_ids, a.labels, a.score)),
        "b": dict(evaluate_scores(b.user_ids, b.labels, b.score)),
        "b_minus_a": {name: value.as_dict() for name, value in intervals.items()},
        "n": len(a.labels),
    }
