"""`binllm publish`: write one snapshot (codes + data + model manifest) to Redis, a Redis Cluster or a
directory; `binllm publish rollback` switches back; `binllm publish versions` lists them.

    binllm publish --codes artifacts/codes --data artifacts/data/ml1m --model artifacts/model \
        --redis redis://localhost:6379/0 --keep 3
    binllm publish --codes artifacts/codes --data artifacts/data/ml1m --model artifacts/model \
        --out-dir artifacts/snapshot
    binllm publish rollback --redis redis://localhost:6379/0 [--to 20250101T000000000000Z]

See `model_store/publish/snapshot.py` for what a snapshot holds and which history each user gets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from model_store.contract.snapshot import DEFAULT_NAMESPACE, split_cluster_url
from model_store.errors import PublishError
from model_store.publish.base import SnapshotPublisher
from model_store.publish.cluster import RedisClusterPublisher
from model_store.publish.directory import DirectoryPublisher
from model_store.publish.inputs import find_split_files, snapshot_from_paths
from model_store.publish.lock import DEFAULT_LOCK_TIMEOUT_S, DEFAULT_LOCK_WAIT_S
from model_store.publish.redis import DEFAULT_BATCH_SIZE, RedisPublisher
from model_store.publish.snapshot import DEFAULT_KEEP, CodeSource

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


def open_publisher(target: PublishTarget) -> SnapshotPublisher:
    """Exactly one target: a Redis URL (a cluster with --redis-cluster or a redis+cluster:// URL) or a directory."""
    if (target.redis_url is None) == (target.out_dir is None):
        raise PublishError("give exactly one of --redis URL or --out-dir DIR")
    if target.out_dir is not None:
        return DirectoryPublisher(target.out_dir)
    assert target.redis_url is not None
    url, cluster_url = split_cluster_url(target.redis_url)
    pause_s = float(os.environ.get(PAUSE_ENV, "0") or 0)
    kind = RedisClusterPublisher if target.cluster or cluster_url else RedisPublisher
    return kind.from_url(
        url,
        namespace=target.namespace,
        batch_size=target.batch_size,
        pause_s=pause_s,
        lock_timeout_s=target.lock_timeout_s,
        lock_wait_s=target.lock_wait_s,
    )


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


@dataclass(frozen=True)
class PublishTarget:
    """Where `publish` and `publish rollback` write: built from the options both share."""

    redis_url: str | None
    out_dir: Path | None
    cluster: bool = False
    namespace: str = DEFAULT_NAMESPACE
    batch_size: int = DEFAULT_BATCH_SIZE
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
    lock_wait_s: float = DEFAULT_LOCK_WAIT_S


RedisUrlOption = Annotated[
    str | None,
    typer.Option(
        "--redis",
        envvar="BINLLM_PUBLISH_REDIS_URL",
        show_envvar=True,
        help="Publish to this Redis URL (redis+cluster://host:port for a cluster); from the environment, a "
        "password stays off the command line.",
    ),
]
ClusterOption = Annotated[
    bool,
    typer.Option(
        "--redis-cluster",
        envvar="BINLLM_REDIS_CLUSTER",
        show_envvar=True,
        help="--redis names a node of a Redis Cluster.",
    ),
]
OutDirOption = Annotated[Path | None, typer.Option("--out-dir", help="Publish to this snapshot directory.")]
NamespaceOption = Annotated[str, typer.Option("--namespace", help="Redis key prefix.")]
LockTimeoutOption = Annotated[
    float,
    typer.Option(
        "--lock-timeout",
        min=0.1,
        help="Seconds the publish lock outlives a publisher that stopped renewing it.",
    ),
]
LockWaitOption = Annotated[
    float,
    typer.Option("--lock-wait", min=0.0, help="Seconds to wait for another publisher's lock; 0 = fail."),
]

publish_app = typer.Typer(
    name="publish",
    help="Publish one snapshot (new version, verified, then one atomic switch); `rollback` switches back.",
)


@publish_app.callback(invoke_without_command=True)
def publish_command(
    ctx: typer.Context,
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
    redis_url: RedisUrlOption = None,
    cluster: ClusterOption = False,
    out_dir: OutDirOption = None,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
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
    lock_timeout_s: LockTimeoutOption = DEFAULT_LOCK_TIMEOUT_S,
    lock_wait_s: LockWaitOption = DEFAULT_LOCK_WAIT_S,
    rollback: Annotated[
        bool, typer.Option("--rollback", hidden=True, help="Old spelling of `binllm publish rollback`.")
    ] = False,
    to: Annotated[str | None, typer.Option("--to", hidden=True, help="With --rollback: the version.")] = None,
) -> None:
    """Publish one snapshot (new version, verified, then one atomic switch) under the publish lock."""
    if ctx.invoked_subcommand is not None:
        if any(v is not None for v in (codes, data, split, items, model, version)):
            raise PublishError(f"put the options after `publish {ctx.invoked_subcommand}`")
        return
    target = PublishTarget(redis_url, out_dir, cluster, namespace, batch_size, lock_timeout_s, lock_wait_s)
    if rollback:
        _rollback(target, to)
        return
    if to is not None:
        raise PublishError("--to only goes with `binllm publish rollback`")
    if codes is None or model is None:
        raise PublishError("publishing needs --codes DIR and --model DIR (and --data DIR or --split FILE)")
    publisher = open_publisher(target)
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
        codes_dir=codes,
    )
    published = publisher.publish(snapshot, keep=keep)
    m = snapshot.manifest
    typer.echo(
        f"published {published}: {m.n_users} users, {m.n_items} items, codes {m.code_version}, "
        f"model {m.model.model_version}; kept {', '.join(publisher.versions())}"
    )


@publish_app.command("rollback")
def rollback_command(
    redis_url: RedisUrlOption = None,
    cluster: ClusterOption = False,
    out_dir: OutDirOption = None,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
    to: Annotated[
        str | None, typer.Option("--to", help="The version to make active; default: the one before it.")
    ] = None,
    lock_timeout_s: LockTimeoutOption = DEFAULT_LOCK_TIMEOUT_S,
    lock_wait_s: LockWaitOption = DEFAULT_LOCK_WAIT_S,
) -> None:
    """Make the previous version (or --to VERSION) active again, in one switch, under the publish lock."""
    target = PublishTarget(
        redis_url, out_dir, cluster, namespace, DEFAULT_BATCH_SIZE, lock_timeout_s, lock_wait_s
    )
    _rollback(target, to)


@publish_app.command("versions")
def versions_command(
    redis_url: RedisUrlOption = None,
    cluster: ClusterOption = False,
    out_dir: OutDirOption = None,
    namespace: NamespaceOption = DEFAULT_NAMESPACE,
) -> None:
    """Print the published versions, newest first, marking the active one with '*'."""
    publisher = open_publisher(PublishTarget(redis_url, out_dir, cluster, namespace))
    active = publisher.active_version()
    for name in publisher.versions():
        typer.echo(f"{'*' if name == active else ' '} {name}")


def _rollback(target: PublishTarget, to: str | None) -> None:
    version = open_publisher(target).rollback(to)
    typer.echo(f"rolled back: active version is now {version}")


def register_publish(app: typer.Typer) -> None:
    """Add the `publish` command group to the `binllm` app."""
    app.add_typer(publish_app, name="publish")
