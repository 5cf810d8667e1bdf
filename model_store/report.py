"""A small visual evaluation report of click scores, for all, warm and cold rows: one directory, three files.

* `roc.png`: ROC curves of all / warm / cold rows, each with its AUC in the legend.
* `calibration.png`: reliability diagram of warm and cold rows (mean predicted vs observed click rate in
  equal-count bins) against the diagonal; AUC only ranks, so a model can rank well and still be far off in
  probability, which is what the service's consumers see.
* `summary.md`: a markdown table (n, positive rate, AUC, UAUC when user ids are given, logloss per subset),
  the caller's `extra` key/values, and links to the two images. A figure from too small a sample (fewer than
  200 rows; for UAUC, 200 users with both labels: `model_store.small_sample`) reads "too few rows" or "too
  few users" instead, since a 0.0000 or 1.0000 from a handful of rows is noise, not a result.

The numbers come from `model_store.metrics`, the same functions every `eval` command prints, so a report
never disagrees with the JSON line next to it. A subset where a metric is undefined (no rows, or one label
only) gets "n/a" instead of an error: a cold-start split may well have no warm rows at all.

`write_report` is called by `binllm codes eval --report DIR` and `binllm llm eval --report DIR`; the caller
decides which rows are warm (`model_store.metrics.split_warm_mask`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from numpy.typing import ArrayLike
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve

from model_store import metrics
from model_store.small_sample import MIN_SAMPLE, is_small_sample

# Headless: the offline job runs in containers and CI without a display; select Agg before pyplot loads.
matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROC_FILENAME = "roc.png"
CALIBRATION_FILENAME = "calibration.png"
SUMMARY_FILENAME = "summary.md"
CALIBRATION_BINS = 10
SUBSETS: tuple[str, ...] = ("all", "warm", "cold")
_COLORS = {"all": "black", "warm": "tab:red", "cold": "tab:blue"}
_DPI = 110

SubsetMetrics = dict[str, float | int | None]


def warm_rows(
    user_ids: ArrayLike, item_ids: ArrayLike, *, train: Path | None, not_cold: ArrayLike | None
) -> np.ndarray:
    """Which rows a report calls warm: the papers' rule against `train` if given, else the `not_cold` column."""
    if train is not None:
        from model_store.data.io import read_split

        table = read_split(train)
        return metrics.warm_mask(
            np.asarray(user_ids),
            np.asarray(item_ids),
            table.column("uid").to_numpy(),
            table.column("iid").to_numpy(),
        )
    if not_cold is None:
        raise ValueError("the split has no not_cold column; give --train to decide the warm rows")
    return np.asarray(not_cold).astype(bool)


def write_report(
    out_dir: Path,
    *,
    labels: ArrayLike,
    scores: ArrayLike,
    warm_mask: ArrayLike,
    title: str,
    extra: Mapping[str, Any] | None = None,
    user_ids: ArrayLike | None = None,
) -> dict[str, SubsetMetrics]:
    """Write roc.png, calibration.png and summary.md into `out_dir` (created if missing).

    `labels` are 0/1 clicks, `scores` click probabilities, `warm_mask` True for warm rows, all in one row
    order; `user_ids` (same order) adds UAUC. Returns {"all"|"warm"|"cold": {"n", "positive_rate", "auc",
    ["uauc", "uauc_users",] "logloss"}}, with None where a metric is undefined for that subset.
    """
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    warm = np.asarray(warm_mask, dtype=bool)
    users = np.asarray(user_ids) if user_ids is not None else None
    lengths = {"labels": y.shape, "scores": s.shape, "warm_mask": warm.shape}
    if users is not None:
        lengths["user_ids"] = users.shape
    if len(set(lengths.values())) != 1 or y.ndim != 1:
        raise ValueError(f"labels, scores, warm_mask and user_ids must be 1-D of one length, got {lengths}")
    rows = {"all": np.ones(y.shape, dtype=bool), "warm": warm, "cold": ~warm}
    results = {
        name: subset_metrics(y[mask], s[mask], users[mask] if users is not None else None)
        for name, mask in rows.items()
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot_roc(out_dir / ROC_FILENAME, y, s, rows, results, title)
    _plot_calibration(out_dir / CALIBRATION_FILENAME, y, s, rows, title)
    (out_dir / SUMMARY_FILENAME).write_text(
        summary_markdown(title, results, extra, with_uauc=users is not None), encoding="utf-8"
    )
    return results


def subset_metrics(labels: np.ndarray, scores: np.ndarray, user_ids: np.ndarray | None) -> SubsetMetrics:
    """n, positive_rate, auc, uauc and uauc_users (only with user ids) and logloss of one subset; None where
    undefined. `uauc_users` counts the users UAUC averages over: those with both labels."""
    n = int(labels.size)
    result: SubsetMetrics = {"n": n, "positive_rate": float(labels.mean()) if n else None, "auc": None}
    if user_ids is not None:
        result["uauc"] = None
        result["uauc_users"] = _users_with_both_labels(user_ids, labels)
    result["logloss"] = metrics.logloss(labels, scores) if n else None
    if np.unique(labels).size < 2:  # AUC needs both labels; the project's metrics raise without them
        return result
    if user_ids is not None:
        evaluated = metrics.evaluate_scores(user_ids, labels, scores)
        result["auc"] = float(evaluated["auc"])
        uauc = float(evaluated["uauc"])
        result["uauc"] = None if math.isnan(uauc) else uauc  # NaN: no user has both labels
    else:
        result["auc"] = metrics.auc(labels, scores)
    return result


def _users_with_both_labels(user_ids: np.ndarray, labels: np.ndarray) -> int:
    if labels.size == 0:
        return 0
    _, index = np.unique(user_ids, return_inverse=True)
    clicks = np.bincount(index, weights=labels)  # [users]
    rows = np.bincount(index)  # [users]
    return int(((clicks > 0) & (clicks < rows)).sum())


def summary_markdown(
    title: str,
    results: Mapping[str, SubsetMetrics],
    extra: Mapping[str, Any] | None,
    *,
    with_uauc: bool,
) -> str:
    """The text of summary.md: title, metrics table, extra key/values, links to the images."""
    columns = ["n", "positive rate", "AUC", *(["UAUC"] if with_uauc else []), "logloss"]
    keys = ["n", "positive_rate", "auc", *(["uauc"] if with_uauc else []), "logloss"]
    lines = [
        f"# {title}",
        "",
        "| rows | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    hidden = False
    for name, values in results.items():
        cells = []
        for key in keys:
            count, unit = _sample_of(values, key)
            if values.get(key) is not None and count is not None and is_small_sample(count):
                cells.append(f"too few {unit}")
                hidden = True
            else:
                cells.append(_cell(values.get(key)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if hidden:
        users = f" (UAUC: {MIN_SAMPLE} users with both labels)" if with_uauc else ""
        lines += [
            "",
            f"*too few*: a figure from fewer than {MIN_SAMPLE} rows{users} is too noisy to show; the eval "
            "command's JSON line still has it.",
        ]
    if extra:
        lines += ["", "| key | value |", "|---|---|"]
        lines += [f"| {_escape(str(key))} | {_escape(str(value))} |" for key, value in extra.items()]
    lines += [
        "",
        f"[ROC curves]({ROC_FILENAME}) · [calibration]({CALIBRATION_FILENAME})",
        "",
        f"![ROC curves]({ROC_FILENAME})",
        "",
        f"![calibration]({CALIBRATION_FILENAME})",
        "",
    ]
    return "\n".join(lines)


def _sample_of(values: Mapping[str, float | int | None], key: str) -> tuple[int | None, str]:
    """How many rows (or users, for UAUC) a metric was computed from; None for the counts themselves."""
    if key in ("auc", "logloss"):
        return _as_count(values.get("n")), "rows"
    if key == "uauc":
        return _as_count(values.get("uauc_users")), "users"
    return None, ""


def _as_count(value: float | int | None) -> int | None:
    return None if value is None else int(value)


def _cell(value: float | int | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def _escape(text: str) -> str:
    """A value with `|` or a newline would break the markdown table row."""
    return text.replace("|", "\\|").replace("\n", " ")


def _plot_roc(
    path: Path,
    labels: np.ndarray,
    scores: np.ndarray,
    rows: Mapping[str, np.ndarray],
    results: Mapping[str, SubsetMetrics],
    title: str,
) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    try:
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
        for name, mask in rows.items():
            auc = results[name]["auc"]
            label = f"{name}: AUC {_cell(auc)} (n={int(mask.sum())})"
            if auc is None:  # keep the subset in the legend so its absence is explained, not silent
                ax.plot([], [], linestyle="", label=label)
                continue
            fpr, tpr, _ = roc_curve(labels[mask], scores[mask])
            ax.plot(fpr, tpr, color=_COLORS[name], label=label)
        _finish(ax, title, "false positive rate", "true positive rate")
        fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    finally:
        plt.close(fig)  # pyplot keeps every open figure alive otherwise


def _plot_calibration(
    path: Path, labels: np.ndarray, scores: np.ndarray, rows: Mapping[str, np.ndarray], title: str
) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    try:
        ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
        for name in ("warm", "cold"):
            mask = rows[name]
            if not mask.any():
                ax.plot([], [], linestyle="", label=f"{name}: no rows")
                continue
            # Quantile bins hold equal counts, so sparse score ranges do not give noisy single-row bins;
            # tied scores (codes give few distinct values) merge bins rather than split a tie.
            observed, predicted = calibration_curve(
                labels[mask], np.clip(scores[mask], 0.0, 1.0), n_bins=CALIBRATION_BINS, strategy="quantile"
            )
            ax.plot(
                predicted, observed, marker="o", color=_COLORS[name], label=f"{name} (n={int(mask.sum())})"
            )
        _finish(ax, title, "mean predicted click probability", "observed click rate")
        fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    finally:
        plt.close(fig)


def _finish(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
