"""The offline job's last step: build a snapshot and publish it atomically to Redis, Redis Cluster or a directory.

    binllm publish --codes artifacts/codes --data artifacts/data/ml1m --model artifacts/model \
        --redis redis://localhost:6379/0
    binllm publish rollback --redis redis://localhost:6379/0

Modules: `snapshot` (build one snapshot in memory), `inputs` (read split files, catalogue and model manifest),
`base` (the publisher interface), `directory`, `redis` and `cluster` (the stores), `lock` (one publisher at a
time), `commands` (the `binllm publish` command group).
"""

from model_store.publish.base import SnapshotPublisher
from model_store.publish.inputs import (
    check_compatible,
    find_split_files,
    load_model_manifest,
    read_catalogue,
    read_splits,
    snapshot_from_paths,
)
from model_store.publish.snapshot import (
    DEFAULT_KEEP,
    CodeSource,
    Snapshot,
    build_snapshot,
    check_version_id,
    item_titles,
    latest_histories,
    new_version_id,
)

__all__ = [
    "DEFAULT_KEEP",
    "CodeSource",
    "Snapshot",
    "SnapshotPublisher",
    "build_snapshot",
    "check_compatible",
    "check_version_id",
    "find_split_files",
    "item_titles",
    "latest_histories",
    "load_model_manifest",
    "new_version_id",
    "read_catalogue",
    "read_splits",
    "snapshot_from_paths",
]
