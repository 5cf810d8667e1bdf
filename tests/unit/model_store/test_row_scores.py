"""Row scores: a CSV that round-trips every float exactly and refuses to pair different rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.row_scores import compare_row_scores, read_row_scores, write_row_scores


def _write(path: Path, labels: np.ndarray, score: np.ndarray, users: np.ndarray) -> Path:
    return write_row_scores(
        path, user_ids=users, item_ids=np.arange(len(labels)), labels=labels, score=score, p_yes=score
    )


def test_round_trip_keeps_every_float_and_marks_missing_codes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    score = rng.random(50)
    labels = (rng.random(50) < 0.5).astype(int)
    users = np.repeat(np.arange(10), 5)
    path = _write(tmp_path / "scores.csv", labels, score, users)
    rows = read_row_scores(path.parent)  # the directory holding it reads the same
    assert np.array_equal(rows.score, score) and np.array_equal(rows.labels, labels)
    assert np.isnan(rows.codes_alone).all()


def test_a_better_model_gets_an_interval_above_zero_and_other_rows_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    labels = (rng.random(2000) < 0.5).astype(int)
    users = np.repeat(np.arange(200), 10)
    noisy = labels + rng.normal(0.0, 2.0, 2000)  # A: weak
    sharp = labels + rng.normal(0.0, 0.7, 2000)  # B: strong
    a = read_row_scores(_write(tmp_path / "a.csv", labels, noisy, users))
    b = read_row_scores(_write(tmp_path / "b.csv", labels, sharp, users))
    result = compare_row_scores(a, b)
    assert result["b_minus_a"]["auc"]["low"] > 0 and result["b"]["auc"] > result["a"]["auc"]
    flipped = read_row_scores(_write(tmp_path / "c.csv", 1 - labels, sharp, users))
    with pytest.raises(ValueError, match="different rows"):
        compare_row_scores(a, flipped)
    (tmp_path / "bad.csv").write_text("uid,score\n1,0.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a row-scores file"):
        read_row_scores(tmp_path / "bad.csv")
