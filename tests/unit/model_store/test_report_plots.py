"""`model_store.report_plots`: reliability bins worked by hand, and panels too small for a curve say so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.report_plots import (
    CALIBRATION_BINS,
    Curve,
    panel_note,
    plot_calibration,
    plot_roc,
    reliability_bins,
)


def test_reliability_bins_by_hand() -> None:
    """Ten equal-width bins of [0, 1]; a score of exactly 1.0 lands in the last one, empty bins read NaN."""
    labels = np.array([0, 1, 1, 1, 0, 1])
    scores = np.array([0.02, 0.08, 0.15, 0.95, 1.0, 0.5])
    binned = reliability_bins(labels, scores)
    assert CALIBRATION_BINS == 10
    assert binned["counts"].tolist() == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]
    assert binned["predicted"][0] == pytest.approx(0.05) and binned["observed"][0] == pytest.approx(0.5)
    assert binned["predicted"][9] == pytest.approx(0.975) and binned["observed"][9] == pytest.approx(0.5)
    assert binned["observed"][1] == 1.0 and binned["observed"][5] == 1.0
    assert np.isnan(binned["predicted"][2]) and np.isnan(binned["observed"][7])


def test_panel_notes_name_why_no_curve_is_drawn() -> None:
    assert panel_note(np.array([]), needs_both_labels=True) == "no rows"
    assert panel_note(np.array([0, 1] * 99), needs_both_labels=False).startswith("too few rows\n(n=198;")
    assert panel_note(np.zeros(300), needs_both_labels=True).startswith("one label only")
    assert panel_note(np.zeros(300), needs_both_labels=False) is None  # calibration needs no second label
    assert panel_note(np.array([0, 1] * 100), needs_both_labels=True) is None  # 200 rows: a curve


def test_panels_below_200_rows_write_too_few_rows_instead_of_curves(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(500) < 0.5).astype(np.float64)
    served, codes = Curve("served (blend)", rng.random(500)), Curve("codes alone", rng.random(500))
    warm = np.arange(500) < 320  # 320 warm rows, 180 cold ones
    rows = {"all": np.ones(500, dtype=bool), "warm": warm, "cold": ~warm}
    aucs = {name: [0.5, 0.5] for name in rows}
    for shown in (
        plot_roc(tmp_path / "roc.png", labels, [served, codes], rows, aucs, "t"),
        plot_calibration(tmp_path / "calibration.png", labels, [served, codes], rows, "t"),
    ):
        assert shown["all"] == shown["warm"] == ["served (blend)", "codes alone"]
        cold = shown["cold"]
        assert isinstance(cold, str) and cold.startswith("too few rows") and "n=180" in cold
    for name in ("roc.png", "calibration.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
