"""`binllm llm eval --report`: the report covers the scored rows, warm by `not_cold` or by the --train rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from model_store.codes.codebook import CodeBook, write_codes
from model_store.data.io import rows_to_table, write_split
from model_store.llm.commands import llm_app
from model_store.metrics import auc
from model_store.report import CALIBRATION_FILENAME, ROC_FILENAME, SUMMARY_FILENAME
from model_store.row_scores import read_row_scores

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _split(path: Path, users: tuple[int, ...], items: tuple[int, ...]) -> Path:
    """Every (user, item) pair; `not_cold` = 1 for users below 3 only."""
    rows = [
        {
            "uid": uid,
            "iid": iid,
            "label": (uid + iid) % 2,
            "timestamp": uid * 1000 + iid,
            "his": [0, 5],
            "his_title": ["", "Heat (1995)"],
            "title": f"Film {iid} (1999)",
            "flag": 0,
            "not_cold": int(uid < 3),
        }
        for uid in users
        for iid in items
    ]
    return write_split(rows_to_table(rows), path)


def _row(summary: str, name: str) -> list[str]:
    line = next(line for line in summary.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_llm_eval_report_by_not_cold_and_by_train_rule(tiny_llama_dir: Path, tmp_path: Path) -> None:
    split = _split(tmp_path / "valid.parquet", (1, 2, 7), (10, 11, 12, 13))
    # Train: user 1 (16 rows) and items 10..13 (4 rows each); user 2, not_cold in the split, has none.
    train = _split(tmp_path / "train.parquet", (1, 1, 1, 1), (10, 11, 12, 13))
    base = ["eval", "--model", str(tiny_llama_dir), "--split", str(split), "--no-progress"]

    result = CliRunner().invoke(llm_app, [*base, "--report", str(tmp_path / "r1")])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    summary = (tmp_path / "r1" / SUMMARY_FILENAME).read_text(encoding="utf-8")
    assert _row(summary, "all")[1] == "12" and 0.0 <= metrics["auc"] <= 1.0
    assert (
        _row(summary, "all")[3] == "too few rows"
    )  # 12 rows: the JSON line has the figure, the report says why not
    assert _row(summary, "warm")[1] == "8" and _row(summary, "cold")[1] == "4"
    for name in (ROC_FILENAME, CALIBRATION_FILENAME):
        assert (tmp_path / "r1" / name).read_bytes().startswith(b"\x89PNG")

    result = CliRunner().invoke(llm_app, [*base, "--report", str(tmp_path / "r2"), "--train", str(train)])
    assert result.exit_code == 0, result.output
    summary = (tmp_path / "r2" / SUMMARY_FILENAME).read_text(encoding="utf-8")
    assert _row(summary, "warm")[1] == "4" and _row(summary, "cold")[1] == "8"


def test_llm_eval_report_tables_the_codes_alone_beside_the_served_score(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    """With a codes directory, every subset's row is followed by the codes alone on the same rows."""
    rng = np.random.default_rng(0)
    book = CodeBook(
        bits=32,
        user_ids=np.array([1, 2, 7], dtype=np.int64),
        user_codes=rng.integers(0, 2**32, 3).astype(np.uint64),
        item_ids=np.array([10, 11, 12, 13], dtype=np.int64),
        item_codes=rng.integers(0, 2**32, 4).astype(np.uint64),
        unknown_user_code=0,
        unknown_item_code=0,
        scale=0.1,
        bias=0.0,
    )
    write_codes(book, tmp_path / "codes")
    split = _split(tmp_path / "valid.parquet", (1, 2, 7), (10, 11, 12, 13))
    args = ["--model", str(tiny_llama_dir), "--split", str(split), "--codes", str(tmp_path / "codes")]
    result = CliRunner().invoke(llm_app, ["eval", *args, "--no-progress", "--report", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    summary = (tmp_path / "r" / SUMMARY_FILENAME).read_text(encoding="utf-8")
    assert _row(summary, "all, codes alone")[1] == str(metrics["codes_only"]["n"]) == "12"
    assert _row(summary, "warm, codes alone")[1] == "8" and _row(summary, "cold, codes alone")[1] == "4"
    assert "LLM (p_yes)" in summary
    rows = read_row_scores(tmp_path / "r")  # one line per scored row, the figures of the JSON line
    assert len(rows.labels) == metrics["n"] == 12
    assert auc(rows.labels, rows.score) == pytest.approx(metrics["auc"])
    assert auc(rows.labels, rows.codes_alone) == pytest.approx(metrics["codes_only"]["auc"])


def test_llm_compare_pairs_two_reports_of_the_same_rows_and_refuses_others(
    tiny_llama_dir: Path, tmp_path: Path
) -> None:
    split = _split(tmp_path / "valid.parquet", (1, 2, 7), (10, 11, 12, 13))
    other = _split(tmp_path / "other.parquet", (1, 2), (10, 11, 12, 13))
    for name, rows in (("a", split), ("b", split), ("c", other)):
        args = ["eval", "--model", str(tiny_llama_dir), "--split", str(rows), "--no-progress"]
        result = CliRunner().invoke(llm_app, [*args, "--report", str(tmp_path / name)])
        assert result.exit_code == 0, result.output

    result = CliRunner().invoke(llm_app, ["compare", str(tmp_path / "a"), str(tmp_path / "b" / "scores.csv")])
    assert result.exit_code == 0, result.output
    compared = json.loads(result.stdout.strip().splitlines()[-1])
    assert compared["n"] == 12 and compared["a"]["auc"] == pytest.approx(compared["b"]["auc"])
    assert compared["b_minus_a"]["auc"]["diff"] == pytest.approx(0.0, abs=1e-6)  # the same model twice

    result = CliRunner().invoke(llm_app, ["compare", str(tmp_path / "a"), str(tmp_path / "c")])
    assert result.exit_code == 2 and "12 and 8 rows" in _unboxed(result.output)
    result = CliRunner().invoke(llm_app, ["compare", str(tmp_path / "a"), str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in _unboxed(result.output)


def _unboxed(output: str) -> str:
    """An error panel's words on one line: rich wraps them inside a box."""
    return " ".join(output.replace("│", " ").split())
