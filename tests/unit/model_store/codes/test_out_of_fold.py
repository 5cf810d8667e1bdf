"""Out-of-fold codes: every train row reads codes of a model that never saw it, in the served codes' bit order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from model_store.codes.codebook import CodeBook, load_codes, pack_signs
from model_store.codes.commands import codes_app
from model_store.codes.config import CodesTrainConfig
from model_store.codes.evaluation import Interactions
from model_store.codes.out_of_fold import (
    align_bits,
    assign_folds,
    fit_out_of_fold,
    load_out_of_fold,
    reorder_bits,
    write_out_of_fold,
)
from model_store.codes.train import fit
from model_store.data.io import read_split
from model_store.llm.dataset import build_prompts
from model_store.llm.tune import out_of_fold_codes
from model_store.llm.tune_config import TuneConfig
from tests.unit.model_store.codes.conftest import make_interactions, write_interactions
from tests.unit.model_store.codes.test_commands import _FAST


def _book(seed: int, bits: int = 8) -> CodeBook:
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(30 + 40 + 2, bits))  # 30 users, 40 items, 2 unknown codes
    codes = pack_signs(signs)
    return CodeBook(
        bits=bits,
        user_ids=np.arange(1, 31, dtype=np.int64),
        user_codes=codes[:30],
        item_ids=np.arange(1, 41, dtype=np.int64),
        item_codes=codes[30:70],
        unknown_user_code=int(codes[70]),
        unknown_item_code=int(codes[71]),
        scale=0.3,
        bias=-0.1,
    )


def test_alignment_undoes_a_permutation_and_flip_of_the_bits_and_keeps_the_scores() -> None:
    reference = _book(0)
    rng = np.random.default_rng(1)
    scrambled = reorder_bits(
        reference, rng.permutation(8), rng.choice([-1.0, 1.0], size=8)
    )  # another fit's order
    assert not np.array_equal(scrambled.item_codes, reference.item_codes)
    aligned = align_bits(scrambled, reference)
    assert np.array_equal(aligned.user_codes, reference.user_codes)
    assert np.array_equal(aligned.item_codes, reference.item_codes)
    assert (aligned.unknown_user_code, aligned.unknown_item_code) == (
        reference.unknown_user_code,
        reference.unknown_item_code,
    )
    users, items = np.array([1, 5, 99]), np.array([3, 40, 77])
    assert np.allclose(aligned.score(users, items)[0], scrambled.score(users, items)[0])


def test_each_fold_model_is_fitted_without_its_own_rows() -> None:
    train = make_interactions(seed=0, n_rows=500)
    reference = _book(0)
    seen: list[np.ndarray] = []

    def fit_codes(rows: Interactions) -> CodeBook:
        seen.append(np.stack([rows.user_ids, rows.item_ids, rows.labels]).T)
        return reference

    result = fit_out_of_fold(fit_codes, train, reference, folds=4, seed=3)
    assert np.array_equal(result.fold_of_row, assign_folds(500, 4, 3))
    everything = np.stack([train.user_ids, train.item_ids, train.labels]).T
    for fold, rows in enumerate(seen):
        assert np.array_equal(rows, everything[result.fold_of_row != fold])
        assert result.for_row(int(np.flatnonzero(result.fold_of_row == fold)[0])) is result.books[fold]
    assert result.metrics["bits_shared_with_reference"] == [1.0] * 4


def test_one_fold_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(10, 1, 0)


@pytest.fixture(scope="module")
def oof_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, object]]:
    """`binllm codes train` then `binllm codes oof` on a small generated split, as a user runs them."""
    root = tmp_path_factory.mktemp("codes-oof")
    train = write_interactions(make_interactions(0, 1200), root / "train.parquet")
    valid = write_interactions(make_interactions(1, 300), root / "valid.parquet")
    runner = CliRunner()
    out = ["--out", str(root / "oof"), "--folds", "3"]
    trained = runner.invoke(
        codes_app,
        ["train", "--train", str(train), "--valid", str(valid), "--out", str(root / "codes"), *_FAST],
    )
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(
        codes_app,
        ["oof", "--codes", str(root / "codes"), "--train", str(train), "--valid", str(valid), *out],
    )
    assert result.exit_code == 0, result.output
    return root, train, json.loads(result.stdout.strip().splitlines()[-1])


def test_the_oof_command_writes_aligned_folds_that_load_back(
    oof_run: tuple[Path, Path, dict[str, object]],
) -> None:
    """What it prints is what its files say: the served codes' AUC on the train rows, and the AUC of each row
    scored by its own fold's codes."""
    root, train, printed = oof_run
    loaded = load_out_of_fold(root / "oof")
    assert len(loaded.books) == 3 and loaded.fold_of_row.size == 1200 and printed["folds"] == 3
    table = read_split(train)
    loaded.check_split(table)
    data = Interactions.from_table(table)
    served = load_codes(root / "codes").score(data.user_ids, data.item_ids)[0]
    own_fold = np.array(
        [
            loaded.for_row(row).score(data.user_ids[row : row + 1], data.item_ids[row : row + 1])[0][0]
            for row in range(data.labels.size)
        ]
    )
    assert printed["train_auc_in_sample"] == pytest.approx(roc_auc_score(data.labels, served))
    assert printed["train_auc_out_of_fold"] == pytest.approx(roc_auc_score(data.labels, own_fold))
    assert all(float(share) >= 0.5 for share in printed["bits_shared_with_reference"])  # type: ignore[attr-defined]


def test_fold_models_train_with_the_served_codes_configuration(
    oof_run: tuple[Path, Path, dict[str, object]],
) -> None:
    root, _, _ = oof_run
    config = CodesTrainConfig.model_validate(
        json.loads((root / "codes" / "config.json").read_text())["config"]
    )
    loaded = load_out_of_fold(root / "oof")
    assert all(book.bits == config.bits == 8 for book in loaded.books)


def test_folds_of_another_split_are_refused(
    oof_run: tuple[Path, Path, dict[str, object]], tmp_path: Path
) -> None:
    root, _, _ = oof_run
    other = write_interactions(make_interactions(7, 1200), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="another train split"):
        load_out_of_fold(root / "oof").check_split(read_split(other))


def test_the_oof_command_needs_a_codes_training_directory(tmp_path: Path) -> None:
    split = write_interactions(make_interactions(0, 100), tmp_path / "train.parquet")
    result = CliRunner().invoke(
        codes_app,
        [
            "oof",
            "--codes",
            str(tmp_path),
            "--train",
            str(split),
            "--valid",
            str(split),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code != 0 and "config.json" in result.output


def test_prompts_and_row_codes_take_each_rows_fold_codes(tmp_path: Path) -> None:
    small = CodesTrainConfig(dim=8, bits=8, epochs=6, anneal_epochs=2, patience=2, lr=2e-2, batch_size=256)
    train = make_interactions(0, 600)
    table = read_split(write_interactions(train, tmp_path / "train.parquet"))
    reference = fit(small, train, make_interactions(1, 200)).codebook
    folds = fit_out_of_fold(lambda rows: fit(small, rows, rows).codebook, train, reference, folds=2)
    write_out_of_fold(folds, tmp_path / "oof")
    loaded = load_out_of_fold(tmp_path / "oof")
    prompts = build_prompts(table, codes=reference, codes_of_row=loaded)
    served = build_prompts(table, codes=reference)
    assert prompts.row_codes is not None
    differs = 0
    for row, (uid, iid) in enumerate(zip(prompts.uids, prompts.iids, strict=True)):
        book = loaded.for_row(row)
        assert prompts.row_codes[row] == (book.user_code(uid), book.item_code(iid))
        differs += prompts.prompts[row] != served.prompts[row]
    assert differs > 0  # some fold codes differ from the served ones, and the prompt shows the fold's


def test_tuning_takes_oof_codes_only_for_their_split_and_codes(
    oof_run: tuple[Path, Path, dict[str, object]], tmp_path: Path
) -> None:
    root, train, _ = oof_run
    table = read_split(train)
    codes = load_codes(root / "codes")

    def config(**overrides: object) -> TuneConfig:
        values: dict[str, object] = {"base_model": "m", "train": str(train), "valid": str(train)}
        values |= {"out_dir": str(tmp_path), "stages": (2,), "codes": str(root / "codes")}
        return TuneConfig.model_validate(values | overrides)

    assert out_of_fold_codes(config(), codes, table) is None
    assert out_of_fold_codes(config(oof_codes=str(root / "oof")), codes, table) is not None
    with pytest.raises(ValueError, match="aligned to codes"):
        out_of_fold_codes(config(oof_codes=str(root / "oof")), _book(0), table)
    other = read_split(write_interactions(make_interactions(7, 1200), tmp_path / "other.parquet"))
    with pytest.raises(ValueError, match="another train split"):
        out_of_fold_codes(config(oof_codes=str(root / "oof")), codes, other)
    with pytest.raises(ValueError, match="stage 2 is not run"):
        config(oof_codes=str(root / "oof"), stages=(1,), codes=None)
