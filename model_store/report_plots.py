"""The two figures of an evaluation report: ROC curves and reliability diagrams, one panel per row subset.

Each panel (all / warm / cold rows) draws the served score and, when given, a baseline scored on the very
same rows (the codes alone, for `binllm llm eval --report`), so the two curves are read against each other:

* `plot_roc`: ROC curve of each score with its AUC in the legend.
* `plot_calibration`: reliability diagram (Niculescu-Mizil & Caruana, ICML 2005) over `CALIBRATION_BINS`
  equal-width bins of [0, 1]: each non-empty bin's mean predicted probability against its observed click rate,
  over a bar chart of how many rows each score put in each bin. The same bins for both scores make the counts
  comparable: a score that piles its rows into two bins says little, however close to the diagonal.

A panel of fewer than `MIN_SAMPLE` rows says "too few rows" instead of drawing a curve (a curve of 30 rows is
noise that reads like a result); a panel with no rows, or rows of one label only (no ROC), says so too.

    python -c "from model_store.report import write_report; help(write_report)"
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from model_store.small_sample import MIN_SAMPLE, is_small_sample

# Headless: the offline job runs in containers and CI without a display; select Agg before pyplot loads.
matplotlib.use("Agg")
import matplotlib.pyplot as plt

CALIBRATION_BINS = 10  # equal-width bins of [0, 1]
_DPI = 110
_PANEL_INCHES = 4.2
_STYLES: tuple[dict[str, Any], ...] = (  # the served score first, then the baseline
    {"color": "tab:red", "linestyle": "-", "marker": "o"},
    {"color": "tab:blue", "linestyle": "--", "marker": "s"},
)


@dataclass(frozen=True)
class Curve:
    """One score to draw: its name in the legends and its value on every row (click probabilities)."""

    name: str
    scores: np.ndarray  # [N]


def panel_note(labels: np.ndarray, *, needs_both_labels: bool) -> str | None:
    """Why a panel draws no curve ('too few rows', 'no rows', 'one label only'), or None when it draws one."""
    n = int(labels.size)
    if n == 0:
        return "no rows"
    if is_small_sample(n):
        return f"too few rows\n(n={n}; a curve needs {MIN_SAMPLE})"
    if needs_both_labels and np.unique(labels).size < 2:
        return f"one label only\n(n={n}): no ROC"
    return None


def _write_note(ax: Any, note: str) -> None:
    box = {"boxstyle": "round", "facecolor": "white", "edgecolor": "lightgrey"}
    ax.text(
        0.5,
        0.5,
        note,
        ha="center",
        va="center",
        fontsize=11,
        color="dimgrey",
        bbox=box,
        transform=ax.transAxes,
    )


def _panel_title(name: str, n: int) -> str:
    return f"{name} rows (n={n:,})"


def plot_roc(
    path: Path,
    labels: np.ndarray,
    curves: list[Curve],
    rows: Mapping[str, np.ndarray],
    aucs: Mapping[str, list[float | None]],
    title: str,
) -> dict[str, list[str] | str]:
    """ROC curves of every score, one panel per subset of `rows`; `aucs[subset][k]` is curve k's AUC.

    Returns what each panel shows: the names of the curves drawn, or the note written instead.
    """
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(1, len(rows), figsize=(_PANEL_INCHES * len(rows), _PANEL_INCHES + 0.6))
    shown: dict[str, list[str] | str] = {}
    try:
        for ax, (name, mask) in zip(np.atleast_1d(axes), rows.items(), strict=True):
            ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
            note = panel_note(labels[mask], needs_both_labels=True)
            shown[name] = note if note is not None else [curve.name for curve in curves]
            if note is not None:
                _write_note(ax, note)
            else:
                for curve, style, auc in zip(curves, _STYLES, aucs[name], strict=False):
                    fpr, tpr, _ = roc_curve(labels[mask], curve.scores[mask])
                    label = f"{curve.name}: AUC {auc:.4f}" if auc is not None else curve.name
                    ax.plot(fpr, tpr, color=style["color"], linestyle=style["linestyle"], label=label)
            _square(ax, _panel_title(name, int(mask.sum())), "false positive rate", "true positive rate")
            ax.legend(loc="lower right", fontsize=8)
        fig.suptitle(title, fontsize=11)
        fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    finally:
        plt.close(fig)  # pyplot keeps every open figure alive otherwise
    return shown


def reliability_bins(
    labels: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, np.ndarray]:
    """Per equal-width bin of [0, 1]: rows, mean predicted probability and observed click rate (NaN if empty).

    A score of exactly 1.0 falls in the last bin.
    """
    clipped = np.clip(scores, 0.0, 1.0)
    index = np.minimum((clipped * bins).astype(np.int64), bins - 1)  # [N] bin of each row
    counts = np.bincount(index, minlength=bins)  # [bins]
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = np.bincount(index, weights=clipped, minlength=bins) / counts  # [bins]
        observed = np.bincount(index, weights=labels, minlength=bins) / counts  # [bins]
    return {"counts": counts, "predicted": predicted, "observed": observed}


def plot_calibration(
    path: Path, labels: np.ndarray, curves: list[Curve], rows: Mapping[str, np.ndarray], title: str
) -> dict[str, list[str] | str]:
    """Reliability diagrams over row counts per bin, one column per subset of `rows`.

    Returns what each panel shows: the names of the curves drawn, or the note written instead.
    """
    columns = len(rows)
    fig, axes = plt.subplots(
        2,
        columns,
        figsize=(_PANEL_INCHES * columns, _PANEL_INCHES * 1.45),
        gridspec_kw={"height_ratios": [3, 1.2]},
        squeeze=False,
    )
    shown: dict[str, list[str] | str] = {}
    try:
        for column, (name, mask) in enumerate(rows.items()):
            top, bottom = axes[0, column], axes[1, column]
            top.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
            note = panel_note(labels[mask], needs_both_labels=False)
            shown[name] = note if note is not None else [curve.name for curve in curves]
            if note is not None:
                _write_note(top, note)
                bottom.set_axis_off()
            else:
                _draw_reliability(top, bottom, labels[mask], [Curve(c.name, c.scores[mask]) for c in curves])
            _square(top, _panel_title(name, int(mask.sum())), "", "observed click rate")
            top.legend(loc="upper left", fontsize=8)
        fig.suptitle(title, fontsize=11)
        fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return shown


def _draw_reliability(top: Any, bottom: Any, labels: np.ndarray, curves: list[Curve]) -> None:
    """Each curve's points on `top`, its rows per bin as bars on `bottom` (side by side, counts written)."""
    width = 1.0 / CALIBRATION_BINS / (len(curves) + 1)
    centres = (np.arange(CALIBRATION_BINS) + 0.5) / CALIBRATION_BINS  # [bins]
    for k, (curve, style) in enumerate(zip(curves, _STYLES, strict=False)):
        binned = reliability_bins(labels, curve.scores)
        filled = binned["counts"] > 0
        top.plot(
            binned["predicted"][filled],
            binned["observed"][filled],
            label=curve.name,
            markersize=4,
            **style,
        )
        offset = (k - (len(curves) - 1) / 2) * width
        bars = bottom.bar(centres + offset, binned["counts"], width=width, color=style["color"], alpha=0.75)
        bottom.bar_label(
            bars, labels=[str(c) if c else "" for c in binned["counts"]], fontsize=6, rotation=90
        )
    bottom.set_xlim(0, 1)
    bottom.set_xticks(np.linspace(0, 1, CALIBRATION_BINS + 1))
    bottom.tick_params(axis="x", labelsize=7)
    bottom.set_xlabel(f"predicted click probability ({CALIBRATION_BINS} bins)")
    bottom.set_ylabel("rows per bin", fontsize=8)
    bottom.margins(y=0.35)  # room for the counts written above the bars
    bottom.grid(alpha=0.3, axis="y")


def _square(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
