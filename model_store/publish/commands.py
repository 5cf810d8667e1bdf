"""`binllm publish`: write one snapshot (codes + data + model manifest) to Redis or a directory, or roll back.

    binllm publish --codes artifacts/codes --data artifacts/data/ml1m --model artifacts/model \
        --redis redis://localhost:6379/0 --keep 3
    binllm publish --codes artifacts/codes --data artifacts/data/ml1m --model artifacts/model \
        --out-dir artifacts/snapshot
    binllm publish --rollback --redis redis://localhost:6379/0 [--to 20250101T000000000000Z]

See `model_store/publish.py` for what a snapshot holds and which history each user gets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from model_store.errors import PublishError
from model_store.publish import (
    DEFAULT_KEEP,
    CodeSource,
    SnapshotPublisher,
    find_split_files,
    snapshot_from_paths,
)
from model_store.publish_directory import DirectoryPublisher
from model_store.publish_redis import DEFAULT_BATCH_SIZE, RedisPublisher

PAUSE_ENV = "BINLLM_PUBLISH_PAUSE_S"
"""Test hook: seconds to sleep between Redis batches, so a test can kill a publish halfway."""
CATALOGUE_FILENAME = "items.parquet"


def load_code_source(codes_dir: Path) -> CodeSource:
    """The trained codes (`binllm codes train` output); only numpy is needed to read them."""
    if not codes_dir.is_dir():
        raise PublishError(f"codes directory not found: {codes_dir}")
    from model_store.codes.codebook import load_codes

    try:
        return load_codes(codes_dir)
    except (OSError, ValueError, KeyError) as exc:
        raise PublishError(f"not a readable codes directory: {codes_dir}: {exc}") from exc


def open_publisher(
    redis_url: str | None, out_dir: Path | None, namespace: str, batch_size: int
) -> SnapshotPublisher:
    """Exactly one target: a Redis URL or a snapshot directory."""
    if (redis_url is None) == (out_dir is None):
        raise PublishError("give exactly one of --redis URL or --out-dir DIR")
    if out_dir is not None:
        return DirectoryPublisher(out_dir)
    assert redis_url is not None
    pause_s = float(os.environ.get(PAUSE_ENV, "0") or 0)
    return RedisPublisher.from_url(redis_url, namespace=namespace, batch_size=batch_size, pause_s=pause_s)


def split_files_of(data: Path | None, splits: list[Path] | None) -> list[Path]:
    """The split files: every train*/valid*/test* file in --data, then each --split, in that order."""
    files = find_split_files(data) if data is not None else []
    for path in splits or []:
        if not path.is_file():
            raise PublishError(f"split file not found: {path}")
        files.append(path)
    if not files:
        raise PublishError("give --data DIR or at least one --split FILE")
    return files


def publish_command(
    codes: Annotated[Path | None, typer.Option("--codes", help="Trained codes directory.")] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Data directory with train/valid/test split files.")
    ] = None,
    split: Annotated[
        list[Path] | None,
        typer.Option("--split", help="A split file (repeatable), besides or instead of --data."),
    ] = None,
    items: Annotated[
        Path | None,
        typer.Option("--items", help="Items catalogue (iid, title); default DATA/items.parquet if present."),
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Exported model directory with binllm.json.")
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis",
            envvar="BINLLM_PUBLISH_REDIS_URL",
            show_envvar=True,
            help="Publish to this Redis URL; from the environment, a password stays off the command line.",
        ),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Publish to this snapshot directory.")
    ] = None,
    namespace: Annotated[str, typer.Option("--namespace", help="Redis key prefix.")] = "binllm",
    keep: Annotated[
        int, typer.Option("--keep", min=1, help="Versions to keep, the new one included.")
    ] = DEFAULT_KEEP,
    version: Annotated[str | None, typer.Option("--version", help="Version id; default: UTC time.")] = None,
    allow_code_mismatch: Annotated[
        bool, typer.Option("--allow-code-mismatch", help="Publish codes the model was not tuned with.")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Redis writes per pipeline.")] = (
        DEFAULT_BATCH_SIZE
    ),
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Switch back to the previous version instead of publishing.")
    ] = False,
    to: Annotated[
        str | None, typer.Option("--to", help="With --rollback: the version to make active.")
    ] = None,
) -> None:
    """Publish one snapshot (new version, verified, then one atomic switch), or roll back."""
    publisher = open_publisher(redis_url, out_dir, namespace, batch_size)
    if rollback:
        target = publisher.rollback(to)
        typer.echo(f"rolled back: active version is now {target}")
        return
    if to is not None:
        raise PublishError("--to only goes with --rollback")
    if codes is None or model is None:
        raise PublishError("publishing needs --codes DIR and --model DIR (and --data DIR or --split FILE)")
    files = split_files_of(data, split)
    if items is None and data is not None and (data / CATALOGUE_FILENAME).is_file():
        items = data / CATALOGUE_FILENAME
    snapshot = snapshot_from_paths(
        load_code_source(codes),
        files,
        model,
        version=version,
        catalogue=items,
        allow_code_mismatch=allow_code_mismatch,
    )
    published = publisher.publish(snapshot, keep=keep)
    m = snapshot.manifest
    typer.echo(
        f"published {published}: {m.n_users} users, {m.n_items} items, codes {m.code_version}, "
        f"model {m.model.model_version}; kept {', '.join(publisher.versions())}"
    )


def register_publish(app: typer.Typer) -> None:
    """Add the top-level `publish` command to the `binllm` app."""
    app.command("publish")(publish_command)
