"""Paired bootstrap of AUC and UAUC differences: is model B really better or worse than model A on these rows?

Both score vectors belong to the same rows (the same split scored twice: fp32 and bf16, or two fp32 runs that
batch differently). Users are resampled with replacement (seeded), every row of a drawn user comes along as
often as the user was drawn, and AUC(B) - AUC(A) and UAUC(B) - UAUC(A) are computed on each resample from the
same rows, so the noise shared by both runs cancels and the interval is the difference's own. A user drawn k
times weighs k in the global AUC (rows weighted k, the same as k copies) and counts k times in UAUC's mean of
per-user AUCs; users with a single label are skipped in UAUC, as `model_store.metrics.uauc` does.

    python bench/bf16_quality.py --max-samples 0      # prints the intervals of bf16 - fp32 and of the fp32 jitter
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score


@dataclass(frozen=True)
class PairedInterval:
    """B - A on all rows (`diff`) and the bootstrap percentile interval [`low`, `high`] at `level`."""

    diff: float
    low: float
    high: float
    level: float
    resamples: int

    def as_dict(self) -> dict[str, float | int]:
        """The fields as plain JSON values."""
        return asdict(self)


def _per_user_auc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray, n_users: int) -> np.ndarray:
    """AUC per user index (NaN where the user's rows hold one label only): [U]."""
    out = np.full(n_users, np.nan)
    order = np.argsort(users, kind="stable")
    bounds = np.flatnonzero(np.diff(users[order])) + 1
    for rows in np.split(order, bounds):
        y = labels[rows]
        if 0 < y.sum() < len(y):
            out[users[rows[0]]] = roc_auc_score(y, scores[rows])
    return out


def paired_bootstrap(
    user_ids: ArrayLike,
    labels: ArrayLike,
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, PairedInterval]:
    """{"auc": ..., "uauc": ...}: the B - A differences with their paired, user-resampled bootstrap interval."""
    if resamples < 1:
        raise ValueError("resamples must be >= 1")
    _, users = np.unique(np.asarray(user_ids), return_inverse=True)  # [N] user index per row
    y = np.asarray(labels).astype(np.int64)  # [N]
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)  # [N], [N]
    if not (len(users) == len(y) == len(a) == len(b)):
        raise ValueError("user_ids, labels and both score vectors must have one entry per row")
    n_users = int(users.max()) + 1
    user_auc_a, user_auc_b = (_per_user_auc(users, y, s, n_users) for s in (a, b))  # [U], [U]
    both = ~np.isnan(user_auc_a)  # users with both labels (the same for A and B: same rows)
    rng = np.random.default_rng(seed)
    d_auc, d_uauc = np.empty(resamples), np.empty(resamples)
    for r in range(resamples):
        counts = np.bincount(rng.integers(0, n_users, size=n_users), minlength=n_users)  # [U] draws per user
        weights = counts[users]  # [N]
        kept = weights > 0
        if 0 < y[kept].sum() < kept.sum():
            d_auc[r] = roc_auc_score(y[kept], b[kept], sample_weight=weights[kept]) - roc_auc_score(
                y[kept], a[kept], sample_weight=weights[kept]
            )
        else:
            d_auc[r] = np.nan
        w = counts[both]  # [U'] multiplicity of the users UAUC counts
        d_uauc[r] = float(np.dot(w, user_auc_b[both] - user_auc_a[both]) / w.sum()) if w.sum() else np.nan
    point_auc = float(roc_auc_score(y, b) - roc_auc_score(y, a))
    point_uauc = float(np.mean(user_auc_b[both] - user_auc_a[both])) if both.any() else float("nan")
    return {
        "auc": _interval(point_auc, d_auc, level),
        "uauc": _interval(point_uauc, d_uauc, level),
    }


def _interval(point: float, draws: np.ndarray, level: float) -> PairedInterval:
    tail = (1.0 - level) / 2.0
    low, high = np.nanquantile(draws, [tail, 1.0 - tail])
    return PairedInterval(
        diff=point, low=float(low), high=float(high), level=level, resamples=int(np.isfinite(draws).sum())
    )


def intervals_as_dict(intervals: dict[str, PairedInterval], prefix: str = "") -> dict[str, object]:
    """Flat JSON fields: `<prefix>d_auc`, `<prefix>d_auc_ci` = [low, high], the same for uauc."""
    out: dict[str, object] = {}
    for metric, interval in intervals.items():
        out[f"{prefix}d_{metric}"] = interval.diff
        out[f"{prefix}d_{metric}_ci"] = [interval.low, interval.high]
    return out


def interval_excludes(interval: PairedInterval, bound: float) -> bool:
    """True when the whole interval lies at or below `-bound`: a loss of at least `bound`, beyond noise."""
    return interval.high <= -bound
