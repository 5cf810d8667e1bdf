"""`binllm codes train|eval|oof`: learn BinMF codes from a split, score any split with stored codes only, and
make out-of-fold codes of the train rows for residual tuning.

    binllm codes train --train ../shared/data/ml-1m-collm/train_ood2.jsonl.gz \
        --valid ../shared/data/ml-1m-collm/valid_small_ood2.jsonl.gz --out artifacts/codes
    binllm codes eval --codes artifacts/codes --split ../shared/data/ml-1m-collm/valid_ood2.jsonl.gz \
        --report artifacts/reports/codes --train ../shared/data/ml-1m-collm/train_ood2.jsonl.gz
    binllm codes oof --codes artifacts/codes --train ../shared/data/ml-1m-collm/train_ood2.jsonl.gz \
        --valid ../shared/data/ml-1m-collm/valid_small_ood2.jsonl.gz --out artifacts/codes-oof

torch is imported inside `train` only, so `eval` (and `binllm --help`) work without the ML extras.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from model_store.codes.codebook import load_codes
from model_store.codes.config import CodesTrainConfig
from model_store.codes.evaluation import Interactions, evaluate_split
from model_store.data.io import read_split
from model_store.metrics import WARM_MIN_TRAIN_ROWS, describe_warm_rule

_DEFAULTS = CodesTrainConfig()
codes_app = typer.Typer(help="BinMF binary codes: train an encoder, evaluate stored codes.")


@codes_app.command("train")
def train_command(
    train: Annotated[Path, typer.Option("--train", help="Train split (.jsonl[.gz] or .parquet).")],
    valid: Annotated[
        Path, typer.Option("--valid", help="Split used for early stopping (valid AUC of codes).")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Directory for config.json, encoder, codes, metrics.json.")
    ],
    bits: Annotated[int, typer.Option(help="Code width.")] = _DEFAULTS.bits,
    dim: Annotated[int, typer.Option(help="MF embedding width.")] = _DEFAULTS.dim,
    seed: Annotated[int, typer.Option(help="Random seed.")] = _DEFAULTS.seed,
    epochs: Annotated[int, typer.Option(help="Most epochs.")] = _DEFAULTS.epochs,
    anneal_epochs: Annotated[
        int, typer.Option(help="Epochs for beta to rise from 0 to 1.")
    ] = _DEFAULTS.anneal_epochs,
    patience: Annotated[
        int, typer.Option(help="Post-anneal epochs without gain before stopping.")
    ] = _DEFAULTS.patience,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = _DEFAULTS.lr,
    weight_decay: Annotated[float, typer.Option(help="Adam L2 weight decay.")] = _DEFAULTS.weight_decay,
    batch_size: Annotated[int, typer.Option(help="Rows per step.")] = _DEFAULTS.batch_size,
    user_dropout: Annotated[
        float, typer.Option(help="Share of user ids replaced by the unknown id.")
    ] = _DEFAULTS.user_dropout,
    item_dropout: Annotated[
        float, typer.Option(help="Share of item ids replaced by the unknown id.")
    ] = _DEFAULTS.item_dropout,
    verbose: Annotated[bool, typer.Option("--verbose", help="Log every epoch to stderr.")] = False,
) -> None:
    """Train BinMF on --train, keep the epoch with the best code-only AUC on --valid, write --out.

    Prints one JSON line: the valid metrics of the kept epoch, its number, seconds and the code version.
    """
    from model_store.codes.train import Interactions, fit, save_run

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = CodesTrainConfig(
            seed=seed,
            dim=dim,
            bits=bits,
            epochs=epochs,
            anneal_epochs=anneal_epochs,
            patience=patience,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            user_dropout=user_dropout,
            item_dropout=item_dropout,
        )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    train_table, valid_table = read_split(train), read_split(valid)
    result = fit(config, Interactions.from_table(train_table), Interactions.from_table(valid_table))
    data = {
        "train": str(train),  # as given: a shipped directory names no machine's absolute paths
        "valid": str(valid),
        "train_rows": train_table.num_rows,
        "valid_rows": valid_table.num_rows,
    }
    save_run(result, config, out, data)
    summary = {
        **result.valid_metrics,
        "best_epoch": result.best_epoch,
        "seconds": round(result.seconds, 2),
        "version": result.codebook.version,
    }
    typer.echo(json.dumps(summary))


_WARM_RULE_HELP = (
    "Train split for the warm rows of --report: warm = user and item each have more than "
    f"{WARM_MIN_TRAIN_ROWS} train rows (the papers' ML-1M rule). Without it, the split's not_cold column "
    "(1 = both occur in train) marks the warm rows."
)


@codes_app.command("eval")
def eval_command(
    codes: Annotated[Path, typer.Option("--codes", help="Directory written by `binllm codes train`.")],
    split: Annotated[Path, typer.Option("--split", help="Split to score (.jsonl[.gz] or .parquet).")],
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write roc.png, calibration.png and summary.md (all / warm / cold rows) into this "
            "directory; needs matplotlib (the ml extra).",
        ),
    ] = None,
    train: Annotated[Path | None, typer.Option("--train", help=_WARM_RULE_HELP)] = None,
) -> None:
    """Score --split with the stored codes, scale and bias only; print one JSON line of metrics.

    Rows whose user or item is not in the codes use the learned unknown code; `n_unknown` counts them.
    --report also draws the same scores split into warm and cold rows, because one AUC over a split hides
    how differently codes do for users and items with little training history.
    """
    if train is not None and report is None:
        raise typer.BadParameter("--train only decides the warm rows of --report; give --report too")
    book, table = load_codes(codes), read_split(split)
    metrics = evaluate_split(book, table)
    if report is not None:
        # Imported here: matplotlib is an ml extra, and plain `codes eval` must work without it.
        from model_store.report import warm_rows, write_report

        data = Interactions.from_table(table)
        scores, _ = book.score(data.user_ids, data.item_ids)
        warm = warm_rows(
            data.user_ids, data.item_ids, train=train, not_cold=table.column("not_cold").to_numpy()
        )
        write_report(
            report,
            labels=data.labels,
            scores=scores,
            warm_mask=warm,
            user_ids=data.user_ids,
            title=f"codes only: {split.name}",
            extra={
                "split": str(split.resolve()),
                "codes": str(codes.resolve()),
                "code_version": book.version,
                "warm rows": describe_warm_rule(str(train.resolve()) if train is not None else None),
                "n_unknown": metrics["n_unknown"],
            },
        )
        typer.echo(f"report written to {report}", err=True)
    typer.echo(json.dumps(metrics))


@codes_app.command("oof")
def oof_command(
    codes: Annotated[
        Path, typer.Option("--codes", help="The served codes (`binllm codes train`): their config and bits.")
    ],
    train: Annotated[Path, typer.Option("--train", help="The train split those codes were fitted on.")],
    valid: Annotated[
        Path, typer.Option("--valid", help="Split used for early stopping, as in `binllm codes train`.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Directory for fold<k>/ codes and folds.json.")],
    folds: Annotated[int, typer.Option(min=2, help="Folds of train rows; one codes model per fold.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the fold draw.")] = 0,
) -> None:
    """Out-of-fold codes for tuning on --train: each row gets the codes of a model that never saw it, with the
    bits aligned to --codes (`model_store/codes/out_of_fold.py`). `binllm llm tune --oof-codes OUT` reads them.

    Every fold model trains with the configuration --codes was trained with (its config.json). Prints one JSON
    line: the codes' AUC on the train rows in-sample and out of fold, and the bits each fold shares with --codes.
    """
    from model_store.codes.out_of_fold import fit_out_of_fold, write_out_of_fold
    from model_store.codes.train import fit

    config_path = codes / "config.json"
    if not config_path.is_file():
        raise typer.BadParameter(f"{config_path} not found: --codes must be a `binllm codes train` directory")
    try:
        config = CodesTrainConfig.model_validate(json.loads(config_path.read_text())["config"])
    except (KeyError, ValueError) as exc:
        raise typer.BadParameter(f"{config_path} holds no codes training config: {exc}") from exc
    reference = load_codes(codes)
    train_data = Interactions.from_table(read_split(train))
    valid_data = Interactions.from_table(read_split(valid))
    result = fit_out_of_fold(
        lambda rows: fit(config, rows, valid_data).codebook, train_data, reference, folds=folds, seed=seed
    )
    write_out_of_fold(result, out)
    typer.echo(json.dumps(result.metrics))
