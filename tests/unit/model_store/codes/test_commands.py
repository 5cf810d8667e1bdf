from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from model_store.codes.commands import codes_app
from model_store.codes.evaluation import Interactions
from tests.unit.model_store.codes.conftest import make_interactions, write_interactions

_FAST = ["--dim", "8", "--bits", "8", "--epochs", "6", "--anneal-epochs", "2", "--patience", "2"]
_FAST += ["--lr", "0.02", "--batch-size", "256"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    root = tmp_path_factory.mktemp("codes-cli")
    train = write_interactions(make_interactions(0, 1200), root / "train.parquet")
    valid = write_interactions(make_interactions(1, 300), root / "valid.parquet")
    out = root / "codes"
    result = CliRunner().invoke(
        codes_app, ["train", "--train", str(train), "--valid", str(valid), "--out", str(out), *_FAST]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    return out, json.loads(lines[0])


def _eval(codes: Path, split: Path) -> dict[str, float]:
    result = CliRunner().invoke(codes_app, ["eval", "--codes", str(codes), "--split", str(split)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_train_writes_a_self_describing_directory(trained: tuple[Path, dict[str, float]]) -> None:
    out, summary = trained
    names = {"config.json", "encoder.safetensors", "codes.parquet", "codebook.json", "metrics.json"}
    assert names <= {path.name for path in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["config"]["bits"] == 8
    assert json.loads((out / "metrics.json").read_text())["code_version"] == summary["version"]


def test_train_records_the_input_paths_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    write_interactions(make_interactions(0, 600), tmp_path / "data" / "train.parquet")
    write_interactions(make_interactions(1, 200), tmp_path / "data" / "valid.parquet")
    monkeypatch.chdir(tmp_path)
    args = ["train", "--train", "data/train.parquet", "--valid", "data/valid.parquet", "--out", "codes"]
    result = CliRunner().invoke(codes_app, [*args, *_FAST])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "codes" / "config.json").read_text())["data"]
    assert (data["train"], data["valid"]) == ("data/train.parquet", "data/valid.parquet")


def test_eval_on_the_valid_split_reproduces_the_training_summary(
    trained: tuple[Path, dict[str, float]],
) -> None:
    out, summary = trained
    metrics = _eval(out, out.parent / "valid.parquet")
    assert metrics["auc"] == summary["auc"]
    assert metrics["uauc"] == summary["uauc"]
    assert metrics["n"] == 300
    assert metrics["n_unknown"] == 0


def test_eval_on_an_unseen_split_counts_rows_with_unknown_ids(
    trained: tuple[Path, dict[str, float]], tmp_path: Path
) -> None:
    out, _ = trained
    known = make_interactions(2, 100)
    new_users = make_interactions(3, 40, user_offset=1000)
    split = Interactions(
        user_ids=np.concatenate([known.user_ids, new_users.user_ids]),
        item_ids=np.concatenate([known.item_ids, new_users.item_ids]),
        labels=np.concatenate([known.labels, new_users.labels]),
    )
    metrics = _eval(out, write_interactions(split, tmp_path / "unseen.parquet"))
    assert metrics["n"] == 140
    assert metrics["n_unknown"] == 40
    assert 0.0 <= metrics["auc"] <= 1.0


def test_train_refuses_a_code_wider_than_64_bits(tmp_path: Path) -> None:
    train = write_interactions(make_interactions(0, 50), tmp_path / "train.parquet")
    args = [
        "train",
        "--train",
        str(train),
        "--valid",
        str(train),
        "--out",
        str(tmp_path / "o"),
        "--bits",
        "65",
    ]
    result = CliRunner().invoke(codes_app, args)
    assert result.exit_code == 2
    assert not (tmp_path / "o").exists()
