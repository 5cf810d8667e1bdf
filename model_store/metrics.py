"""Click-prediction metrics as the papers report them: AUC, UAUC and logloss, plus the warm/cold split.

UAUC (CoLLM / BinLLM `used_metrics.py` protocol) is the plain mean of per-user AUCs over the users whose
rows contain both labels; users with a single label are skipped, not counted as 0.5.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import log_loss, roc_auc_score

WARM_MIN_TRAIN_ROWS = 3  # warm = user and item each have MORE than this many train rows (papers' ML-1M rule)


def auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve; needs both labels present."""
    return float(roc_auc_score(np.asarray(labels), np.asarray(scores)))


def uauc(user_ids: ArrayLike, labels: ArrayLike, scores: ArrayLike) -> float:
    """Mean per-user AUC over users that have both labels; NaN when no user qualifies."""
    users, y, s = np.asarray(user_ids), np.asarray(labels), np.asarray(scores)
    rows_by_user: dict[object, list[int]] = defaultdict(list)
    for index, user in enumerate(users.tolist()):
        rows_by_user[user].append(index)
    per_user = [
        roc_auc_score(y[rows], s[rows]) for rows in rows_by_user.values() if len(set(y[rows].tolist())) == 2
    ]
    return float(np.mean(per_user)) if per_user else float("nan")


def logloss(labels: ArrayLike, scores: ArrayLike, eps: float = 1e-7) -> float:
    """Binary cross-entropy of probabilities, clipped away from 0 and 1."""
    probabilities = np.clip(np.asarray(scores, dtype=np.float64), eps, 1 - eps)
    return float(log_loss(np.asarray(labels), probabilities, labels=[0, 1]))


def warm_mask(
    user_ids: Sequence[int] | np.ndarray,
    item_ids: Sequence[int] | np.ndarray,
    train_user_ids: Sequence[int] | np.ndarray,
    train_item_ids: Sequence[int] | np.ndarray,
) -> np.ndarray:
    """True where both the user and the item have more than 3 rows in train."""
    user_counts = _counts(train_user_ids)
    item_counts = _counts(train_item_ids)
    return np.array(
        [
            user_counts.get(int(user), 0) > WARM_MIN_TRAIN_ROWS
            and item_counts.get(int(item), 0) > WARM_MIN_TRAIN_ROWS
            for user, item in zip(np.asarray(user_ids).tolist(), np.asarray(item_ids).tolist(), strict=True)
        ],
        dtype=bool,
    )


def describe_warm_rule(train: str | None) -> str:
    """How a report's warm rows were chosen, in words for its summary: the papers' rule against the train split
    named `train` (`warm_mask`), or, without one, the split's own `not_cold` column (1 = both the user and the
    item occur in train), which needs no second file but already counts a single train row as warm."""
    if train is None:
        return "the split's not_cold = 1 (user and item both occur in train)"
    return f"user and item each have more than {WARM_MIN_TRAIN_ROWS} rows in {train}"


def _counts(ids: Sequence[int] | np.ndarray) -> dict[int, int]:
    values, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def evaluate_scores(user_ids: ArrayLike, labels: ArrayLike, scores: ArrayLike) -> dict[str, float | int]:
    """The one JSON line every `eval` command prints: auc, uauc, logloss and n."""
    y = np.asarray(labels)
    return {
        "auc": auc(y, scores),
        "uauc": uauc(user_ids, y, scores),
        "logloss": logloss(y, scores),
        "n": int(y.size),
    }
