"""A small visual evaluation report of click scores, for all, warm and cold rows: one directory, three files.

* `roc.png`: ROC curves, one panel per subset (all / warm / cold), each curve's AUC in the legend.
* `calibration.png`: reliability diagrams, one panel per subset: mean predicted vs observed click rate in 10
  equal-width bins, over the rows each bin holds; AUC only ranks, so a model can rank well and still be far
  off in probability, which is what the service's consumers see.
* `summary.md`: a markdown table (n, positive rate, AUC, UAUC when user ids are given, logloss per subset),
  the caller's `extra` key/values, and links to the two images. A figure from too small a sample (fewer than
  200 rows; for UAUC, 200 users with both labels: `model_store.small_sample`) reads "too few rows" or "too
  few users" instead, since a 0.0000 or 1.0000 from a handful of rows is noise, not a result; a figure's
  panel of fewer than 200 rows says "too few rows" instead of drawing a curve (`model_store.report_plots`).

With a `baseline` (for `binllm llm eval --report`: the codes alone, scored on the very same rows), every panel
draws it beside the served score and the table gets a row per subset for it, so the report shows at a glance
whether the LLM adds to its codes.

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

import numpy as np
from numpy.typing import ArrayLike

from model_store import metrics
from model_store.report_plots import Curve, plot_calibration, plot_roc
from model_store.small_sample import MIN_SAMPLE, is_small_sample

ROC_FILENAME = "roc.png"
CALIBRATION_FILENAME = "calibration.png"
SUMMARY_FILENAME = "summary.md"
SUBSETS: tuple[str, ...] = ("all", "warm", "cold")

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
    score_name: str = "score",
    baseline: ArrayLike | None = None,
    baseline_name: str = "codes alone",
) -> dict[str, SubsetMetrics]:
    """Write roc.png, calibration.png and summary.md into `out_dir` (created if missing).

    `labels` are 0/1 clicks, `scores` click probabilities, `warm_mask` True for warm rows, all in one row
    order; `user_ids` (same order) adds UAUC; `baseline` (same order) is a second score of the same rows,
    drawn beside `scores` in every panel (`score_name` and `baseline_name` name them in the legends).
    Returns {"all"|"warm"|"cold": {"n", "positive_rate", "auc", ["uauc", "uauc_users",] "logloss"}}, with
    None where a metric is undefined for that subset, plus "all|warm|cold, <baseline_name>" with a baseline.
    """
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    warm = np.asarray(warm_mask, dtype=bool)
    users = np.asarray(user_ids) if user_ids is not None else None
    base = np.asarray(baseline, dtype=np.float64) if baseline is not None else None
    lengths = {"labels": y.shape, "scores": s.shape, "warm_mask": warm.shape}
    if users is not None:
        lengths["user_ids"] = users.shape
    if base is not None:
        lengths["baseline"] = base.shape
    if len(set(lengths.values())) != 1 or y.ndim != 1:
        raise ValueError(
            f"labels, scores, warm_mask, user_ids and baseline must be 1-D of one length, got {lengths}"
        )
    rows = {"all": np.ones(y.shape, dtype=bool), "warm": warm, "cold": ~warm}
    curves = [Curve(score_name, s), *([Curve(baseline_name, base)] if base is not None else [])]
    per_curve = [
        {
            name: subset_metrics(y[mask], curve.scores[mask], users[mask] if users is not None else None)
            for name, mask in rows.items()
        }
        for curve in curves
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    aucs = {name: [_auc_of(results[name]) for results in per_curve] for name in rows}
    plot_roc(out_dir / ROC_FILENAME, y, curves, rows, aucs, title)
    plot_calibration(out_dir / CALIBRATION_FILENAME, y, curves, rows, title)
    results: dict[str, SubsetMetrics] = {}
    for name in rows:  # the table reads each subset's served row, then its baseline's
        results[name] = per_curve[0][name]
        results.update({f"{name}, {c.name}": r[name] for c, r in zip(curves[1:], per_curve[1:], strict=True)})
    (out_dir / SUMMARY_FILENAME).write_text(
        summary_markdown(title, results, extra, with_uauc=users is not None), encoding="utf-8"
    )
    return results


def _auc_of(values: SubsetMetrics) -> float | None:
    auc = values.get("auc")
    return None if auc is None else float(auc)


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
