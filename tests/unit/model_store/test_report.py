"""`model_store.report.write_report` on generated scores, and `binllm codes eval --report` on tiny codes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from model_store.codes.codebook import load_codes
from model_store.codes.commands import codes_app
from model_store.codes.evaluation import Interactions
from model_store.data.io import rows_to_table, write_split
from model_store.metrics import uauc
from model_store.report import CALIBRATION_FILENAME, ROC_FILENAME, SUMMARY_FILENAME, write_report
from tests.unit.model_store.codes.conftest import make_interactions, write_interactions

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _generated(seed: int = 7, n: int = 600, users: int = 30) -> dict[str, np.ndarray]:
    """Scores that rank clicks better for warm rows than for cold ones, as probabilities in (0, 1)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(np.int64)
    warm = rng.random(n) < 0.6
    signal = np.where(warm, 1.5, 0.4)
    scores = 1.0 / (1.0 + np.exp(-(rng.normal(0.0, 1.0, n) + signal * (labels - 0.5))))
    return {"labels": labels, "scores": scores, "warm": warm, "users": rng.integers(0, users, n)}


def _row(summary: str, name: str) -> list[str]:
    """The cells of the metrics-table row for subset `name`."""
    line = next(line for line in summary.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 10_000  # a drawn figure, not an empty canvas


def test_report_writes_three_files_with_the_sklearn_figures(tmp_path: Path) -> None:
    g = _generated(n=4000, users=300)  # every subset over 200 rows and 200 users with both labels
    results = write_report(
        tmp_path / "report",
        labels=g["labels"],
        scores=g["scores"],
        warm_mask=g["warm"],
        user_ids=g["users"],
        title="generated scores",
        extra={"split": "valid.parquet", "note": "a|b"},
    )
    out = tmp_path / "report"
    for name in (ROC_FILENAME, CALIBRATION_FILENAME):
        _assert_png(out / name)
    summary = (out / SUMMARY_FILENAME).read_text(encoding="utf-8")
    assert summary.startswith("# generated scores\n")
    assert f"({ROC_FILENAME})" in summary and f"({CALIBRATION_FILENAME})" in summary
    assert "| split | valid.parquet |" in summary
    assert "| note | a\\|b |" in summary  # a pipe in a value does not break the table
    assert "too few" not in summary
    subsets = {"all": np.ones_like(g["warm"]), "warm": g["warm"], "cold": ~g["warm"]}
    for name, mask in subsets.items():
        expected_auc = roc_auc_score(g["labels"][mask], g["scores"][mask])
        expected_uauc = uauc(g["users"][mask], g["labels"][mask], g["scores"][mask])
        assert results[name]["auc"] == pytest.approx(expected_auc)
        assert results[name]["uauc"] == pytest.approx(expected_uauc)
        assert results[name]["n"] == int(mask.sum())
        assert results[name]["positive_rate"] == pytest.approx(g["labels"][mask].mean())
        cells = _row(summary, name)
        assert cells[1] == str(int(mask.sum()))
        assert cells[3] == f"{expected_auc:.4f}"
        assert cells[4] == f"{expected_uauc:.4f}"
    assert results["warm"]["auc"] > results["cold"]["auc"]  # the generator's stronger warm signal shows


def test_a_baseline_on_the_same_rows_is_tabled_beside_the_served_score(tmp_path: Path) -> None:
    """`llm eval --report` passes the codes alone: each subset's row is followed by the baseline's."""
    g = _generated(n=4000, users=300)
    rng = np.random.default_rng(11)
    codes = 1.0 / (1.0 + np.exp(-(rng.normal(0.0, 1.0, 4000) + 0.3 * (g["labels"] - 0.5))))
    results = write_report(
        tmp_path,
        labels=g["labels"],
        scores=g["scores"],
        warm_mask=g["warm"],
        user_ids=g["users"],
        title="served vs codes",
        score_name="served (blend)",
        baseline=codes,
        baseline_name="codes alone",
    )
    summary = (tmp_path / SUMMARY_FILENAME).read_text(encoding="utf-8")
    table = [line.split("|")[1].strip() for line in summary.splitlines() if line.startswith("| ")]
    assert table[1:7] == ["all", "all, codes alone", "warm", "warm, codes alone", "cold", "cold, codes alone"]
    subsets = {"all": np.ones_like(g["warm"]), "warm": g["warm"], "cold": ~g["warm"]}
    for name, mask in subsets.items():
        expected = roc_auc_score(g["labels"][mask], codes[mask])
        assert results[f"{name}, codes alone"]["auc"] == pytest.approx(expected)
        assert _row(summary, f"{name}, codes alone")[3] == f"{expected:.4f}"
        assert results[name]["auc"] == pytest.approx(roc_auc_score(g["labels"][mask], g["scores"][mask]))
    assert results["all"]["auc"] > results["all, codes alone"]["auc"]  # the weaker generated codes show
    for name in (ROC_FILENAME, CALIBRATION_FILENAME):
        _assert_png(tmp_path / name)
    with pytest.raises(ValueError, match="one length"):
        write_report(
            tmp_path / "bad",
            labels=g["labels"],
            scores=g["scores"],
            warm_mask=g["warm"],
            title="x",
            baseline=codes[:-1],
        )


def test_single_class_and_empty_subsets_write_na(tmp_path: Path) -> None:
    g = _generated(seed=3, n=200)
    labels = np.where(g["warm"], g["labels"], 0)  # cold rows: no clicks at all
    results = write_report(
        tmp_path, labels=labels, scores=g["scores"], warm_mask=g["warm"], title="one-class cold rows"
    )
    assert results["cold"]["auc"] is None
    assert "uauc" not in results["cold"]  # no user ids, no UAUC column
    assert results["cold"]["logloss"] is not None and math.isfinite(results["cold"]["logloss"])
    summary = (tmp_path / SUMMARY_FILENAME).read_text(encoding="utf-8")
    assert "UAUC" not in summary
    cold = _row(summary, "cold")
    assert cold[2] == "0.0000" and cold[3] == "n/a"  # undefined stays n/a, whatever the sample
    assert cold[4] == "too few rows"  # logloss of ~80 rows
    assert results["warm"]["auc"] == pytest.approx(roc_auc_score(labels[g["warm"]], g["scores"][g["warm"]]))
    assert _row(summary, "warm")[3] == "too few rows"  # ~120 rows: the figure is in `results`, not shown

    everything_warm = tmp_path / "all-warm"
    results = write_report(
        everything_warm,
        labels=g["labels"],
        scores=g["scores"],
        warm_mask=np.ones(200, dtype=bool),
        user_ids=g["users"],
        title="no cold rows",
    )
    assert results["cold"] == {
        "n": 0,
        "positive_rate": None,
        "auc": None,
        "logloss": None,
        "uauc": None,
        "uauc_users": 0,
    }
    assert _row((everything_warm / SUMMARY_FILENAME).read_text(), "cold") == [
        "cold",
        "0",
        "n/a",
        "n/a",
        "n/a",
        "n/a",
    ]
    _assert_png(everything_warm / ROC_FILENAME)
    _assert_png(everything_warm / CALIBRATION_FILENAME)


def test_figures_from_few_rows_or_users_read_too_few_with_a_footnote(tmp_path: Path) -> None:
    """All rows: 600 rows but 30 users, so UAUC is hidden and AUC shown; warm and cold hide both."""
    g = _generated(seed=5, n=600, users=30)
    warm = np.arange(600) < 450  # 450 warm rows, 150 cold rows
    results = write_report(
        tmp_path, labels=g["labels"], scores=g["scores"], warm_mask=warm, user_ids=g["users"], title="small"
    )
    summary = (tmp_path / SUMMARY_FILENAME).read_text(encoding="utf-8")
    everything, cold = _row(summary, "all"), _row(summary, "cold")
    assert everything[3] == f"{results['all']['auc']:.4f}" and everything[4] == "too few users"
    assert results["all"]["uauc_users"] == 30 and results["all"]["uauc"] is not None
    assert cold[1] == "150" and cold[3] == "too few rows" and cold[5] == "too few rows"
    assert "fewer than 200 rows (UAUC: 200 users with both labels)" in summary


def test_report_refuses_columns_of_different_lengths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one length"):
        write_report(tmp_path, labels=[0, 1, 1], scores=[0.2, 0.7], warm_mask=[True, False, True], title="x")
    assert not (tmp_path / SUMMARY_FILENAME).exists()


# ---- `binllm codes eval --report` -------------------------------------------------------------------------

_FAST = ["--dim", "8", "--bits", "8", "--epochs", "4", "--anneal-epochs", "2", "--patience", "2"]
_FAST += ["--lr", "0.02", "--batch-size", "256"]


@pytest.fixture(scope="module")
def codes_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Codes trained on 800 generated rows (the codes tests' generator); returns (codes dir, train split)."""
    root = tmp_path_factory.mktemp("codes-report")
    train = write_interactions(make_interactions(0, 800), root / "train.parquet")
    valid = write_interactions(make_interactions(1, 200), root / "valid.parquet")
    out = root / "codes"
    result = CliRunner().invoke(
        codes_app, ["train", "--train", str(train), "--valid", str(valid), "--out", str(out), *_FAST]
    )
    assert result.exit_code == 0, result.output
    return out, train


def _split_with_cold_rows(path: Path) -> tuple[Path, Interactions, np.ndarray]:
    """360 rows of known ids then 240 of users never seen in train (each subset over the 200 rows a report
    shows figures for); `not_cold` is 0 for the new users and, to tell the two warm rules apart, also for
    the first 20 known rows."""
    known, new_users = make_interactions(2, 360), make_interactions(3, 240, user_offset=1000)
    data = Interactions(
        user_ids=np.concatenate([known.user_ids, new_users.user_ids]),
        item_ids=np.concatenate([known.item_ids, new_users.item_ids]),
        labels=np.concatenate([known.labels, new_users.labels]),
    )
    not_cold = np.r_[np.zeros(20), np.ones(340), np.zeros(240)].astype(bool)
    rows = [
        {
            "uid": int(u),
            "iid": int(i),
            "label": int(y),
            "timestamp": n,
            "his": [0],
            "his_title": [""],
            "title": f"item {int(i)}",
            "flag": 0,
            "not_cold": int(w),
        }
        for n, (u, i, y, w) in enumerate(
            zip(data.user_ids, data.item_ids, data.labels, not_cold, strict=True)
        )
    ]
    return write_split(rows_to_table(rows), path), data, not_cold


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(codes_app, ["eval", *args])
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_codes_eval_report_uses_the_train_rule_or_not_cold(
    codes_run: tuple[Path, Path], tmp_path: Path
) -> None:
    codes, train = codes_run
    split, data, not_cold = _split_with_cold_rows(tmp_path / "split.parquet")
    scores, _ = load_codes(codes).score(data.user_ids, data.item_ids)
    plain_code, plain_out = _invoke("--codes", str(codes), "--split", str(split))
    assert plain_code == 0, plain_out

    # --train: the papers' rule; every known user and item has far more than 3 of the 800 train rows.
    code, out = _invoke(
        "--codes", str(codes), "--split", str(split), "--report", str(tmp_path / "r1"), "--train", str(train)
    )
    assert code == 0, out
    assert out == plain_out  # stdout is still the one metrics line, unchanged by --report
    summary = (tmp_path / "r1" / SUMMARY_FILENAME).read_text(encoding="utf-8")
    by_rule = np.r_[np.ones(360), np.zeros(240)].astype(bool)
    for name, mask in {"warm": by_rule, "cold": ~by_rule}.items():
        cells = _row(summary, name)
        assert cells[1] == str(int(mask.sum()))
        assert cells[3] == f"{roc_auc_score(data.labels[mask], scores[mask]):.4f}"
    assert _row(summary, "all")[3] == f"{json.loads(out)['auc']:.4f}"
    assert "more than 3 rows in" in summary
    _assert_png(tmp_path / "r1" / ROC_FILENAME)
    _assert_png(tmp_path / "r1" / CALIBRATION_FILENAME)

    # No --train: the split's not_cold column.
    code, out = _invoke("--codes", str(codes), "--split", str(split), "--report", str(tmp_path / "r2"))
    assert code == 0, out
    summary = (tmp_path / "r2" / SUMMARY_FILENAME).read_text(encoding="utf-8")
    assert _row(summary, "warm")[1] == "340" and _row(summary, "cold")[1] == "260"
    expected = roc_auc_score(data.labels[not_cold], scores[not_cold])
    assert _row(summary, "warm")[3] == f"{expected:.4f}"
    assert "not_cold" in summary


def test_codes_eval_train_without_report_is_a_usage_error(codes_run: tuple[Path, Path]) -> None:
    codes, train = codes_run
    code, out = _invoke("--codes", str(codes), "--split", str(train), "--train", str(train))
    assert code == 2
    assert "--report" in out
