"""Build one serving snapshot from codes, split data and a model manifest, and publish it atomically.

The offline job's last step. A snapshot (see `model_store/contract/snapshot.py`) holds, per user, the code
and the <= 10 most recent positive titles (newest last); per item, the code (None for a cold item) and the
title; and the manifest of the model. It is written under a new version, verified, and only then made
active by one atomic pointer switch, so a crash midway never changes what the service reads. The stores
are `DirectoryPublisher` (`publish_directory.py`) and `RedisPublisher` (`publish_redis.py`).

    binllm publish --codes artifacts/codes --data artifacts/data --model artifacts/model --redis redis://localhost:6379/0

Which history a user gets: of every row of the user across the split files (train, valid, test), the most
recent one, by (timestamp, flag, file order); its `his_title` (the earlier positives, pad dropped) plus its
own title when its label is 1. This is what the papers' prompts would show for that user's next request.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from model_store.contract.fusion import CodeScore
from model_store.contract.prompts import MAX_HISTORY_TITLES
from model_store.contract.snapshot import (
    MANIFEST_FILENAME,
    ItemEntry,
    ModelManifest,
    SnapshotManifest,
    UserEntry,
)
from model_store.data.io import read_split
from model_store.errors import DataFormatError, PublishError

logger = logging.getLogger(__name__)

SPLIT_NAMES: tuple[str, ...] = ("train", "valid", "test")
SPLIT_SUFFIXES: tuple[str, ...] = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz")
DEFAULT_KEEP = 3
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class CodeSource(Protocol):
    """What the publisher needs from a trained codes directory (`model_store.codes.load_codes`)."""

    @property
    def bits(self) -> int:
        """Width of every code."""
        ...

    @property
    def version(self) -> str:
        """Identifies the codes directory; the model manifest's `code_version` must match it."""
        ...

    def user_code(self, uid: int) -> int | None:
        """The user's code, or None if the encoder never saw the user."""
        ...

    def item_code(self, iid: int) -> int | None:
        """The item's code, or None for a cold item."""
        ...

    def code_score(self) -> CodeScore | None:
        """The codes' own score (scale, bias, unknown codes), published for the service's fallback."""
        ...


@dataclass(frozen=True)
class Snapshot:
    """One complete, not yet published snapshot; ids are strings, as the service API uses them."""

    manifest: SnapshotManifest
    users: dict[str, UserEntry]
    items: dict[str, ItemEntry]


class SnapshotPublisher(Protocol):
    """A snapshot store that can publish, roll back and report its versions (Redis or a directory)."""

    def publish(self, snapshot: Snapshot, *, keep: int = DEFAULT_KEEP) -> str:
        """Write `snapshot` under its version, verify it, switch the active pointer, prune; returns the version."""
        ...

    def rollback(self, to: str | None = None) -> str:
        """Make `to` (default: the version published before the active one) active; returns it."""
        ...

    def active_version(self) -> str | None:
        """The active version, or None before the first publish."""
        ...

    def versions(self) -> list[str]:
        """Complete published versions, newest first."""
        ...

    def read_manifest(self, version: str) -> SnapshotManifest | None:
        """The manifest of a version, or None if it has none (never published, or deleted)."""
        ...


def new_version_id(now: dt.datetime | None = None) -> str:
    """A version id that sorts by publish time: UTC `YYYYMMDDTHHMMSSffffffZ`."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def check_version_id(version: str) -> str:
    """Refuse version ids that could escape a directory or a Redis key segment (no '/', ':', globs)."""
    if not VERSION_RE.fullmatch(version):
        raise PublishError(f"invalid version id {version!r}: use letters, digits, '.', '_' and '-'")
    return version


def find_split_files(data_dir: Path) -> list[Path]:
    """Split files in a data directory: names starting with train/valid/test and a split suffix, sorted."""
    if not data_dir.is_dir():
        raise PublishError(f"data directory not found: {data_dir}")
    found = [
        path
        for path in sorted(data_dir.iterdir())
        if path.is_file()
        and path.name.startswith(SPLIT_NAMES)
        and path.name.endswith(SPLIT_SUFFIXES)
        and not path.name.startswith(".")
    ]
    if not found:
        raise PublishError(f"no split files (train*/valid*/test* .parquet or .jsonl[.gz]) in {data_dir}")
    return found


def read_splits(paths: Iterable[Path]) -> pa.Table:
    """Every row of the given split files, in file order, as one table (DataFormatError names a bad file)."""
    tables = [read_split(path) for path in paths]
    if not tables:
        raise PublishError("no split files given")
    return pa.concat_tables(tables)


def load_model_manifest(model_dir: Path) -> ModelManifest:
    """Read `binllm.json` beside an exported model."""
    path = model_dir / MANIFEST_FILENAME
    if not path.is_file():
        raise PublishError(f"model manifest not found: {path} (export the model first)")
    try:
        return ModelManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise DataFormatError(path, None, f"not a valid model manifest: {first}") from exc


def check_compatible(codes: CodeSource, model: ModelManifest, *, allow_code_mismatch: bool = False) -> None:
    """Refuse codes the model was not tuned with: the prompts would carry codes the model never learned."""
    problems = []
    if model.code_version is not None and model.code_version != codes.version:
        problems.append(f"model was tuned with codes {model.code_version!r} but --codes is {codes.version!r}")
    if model.prompt_style.bits != codes.bits:
        problems.append(
            f"model prompts use {model.prompt_style.bits}-bit codes but the codes have {codes.bits}"
        )
    if not problems:
        if model.code_version is None:
            logger.warning(
                "model manifest names no code_version; publishing codes %s unchecked", codes.version
            )
        return
    if allow_code_mismatch:
        logger.warning("publishing despite a codes/model mismatch: %s", "; ".join(problems))
        return
    raise PublishError("; ".join(problems) + " (pass --allow-code-mismatch to publish anyway)")


def latest_histories(table: pa.Table, limit: int = MAX_HISTORY_TITLES) -> dict[int, list[str]]:
    """Per user, the positive titles known after their most recent row, newest last, at most `limit`."""
    if table.num_rows == 0:
        return {}
    uid = table["uid"].to_numpy()
    # lexsort sorts by the last key first: uid, then timestamp, then flag (train < valid < test), then row.
    order = np.lexsort(
        (np.arange(table.num_rows), table["flag"].to_numpy(), table["timestamp"].to_numpy(), uid)
    )
    sorted_uid = uid[order]
    is_last = np.append(sorted_uid[1:] != sorted_uid[:-1], True)
    latest = table.take(pa.array(order[is_last])).select(["uid", "label", "title", "his_title"])
    histories: dict[int, list[str]] = {}
    for row in latest.to_pylist():
        titles = [title for title in row["his_title"] if title]  # "" is the papers' leading pad
        if row["label"] == 1:
            titles.append(row["title"])
        histories[row["uid"]] = titles[-limit:] if limit > 0 else []
    return histories


def item_titles(table: pa.Table) -> dict[int, str]:
    """Every item in the data, including those seen only in histories; a row's own title wins."""
    rows = table.select(["iid", "title"])
    history = pa.table({"iid": pc.list_flatten(table["his"]), "title": pc.list_flatten(table["his_title"])})
    pairs = pa.concat_tables([rows, history.cast(rows.schema)])
    pairs = pairs.filter(pc.not_equal(pairs["title"], ""))  # the pad (0, "")
    first = pairs.group_by("iid", use_threads=False).aggregate([("title", "first")])
    return dict(zip(first["iid"].to_pylist(), first["title_first"].to_pylist(), strict=True))


def build_snapshot(
    codes: CodeSource,
    table: pa.Table,
    model: ModelManifest,
    *,
    version: str | None = None,
    extra_items: dict[int, str] | None = None,
) -> Snapshot:
    """Assemble the snapshot: every user and item of the data with its code; ids become strings."""
    version = check_version_id(version or new_version_id())
    users = {
        str(uid): UserEntry(code=codes.user_code(uid), history_titles=titles)
        for uid, titles in latest_histories(table).items()
    }
    titles = {**(extra_items or {}), **item_titles(table)}
    items = {str(iid): ItemEntry(code=codes.item_code(iid), title=title) for iid, title in titles.items()}
    manifest = SnapshotManifest(
        version=version,
        code_version=codes.version,
        model=model,
        n_users=len(users),
        n_items=len(items),
        created_at=dt.datetime.now(dt.UTC).isoformat(),
        code_score=codes.code_score(),
    )
    n_user_codes = sum(entry.code is not None for entry in users.values())
    n_item_codes = sum(entry.code is not None for entry in items.values())
    logger.info(
        "snapshot %s: %d users (%d with codes), %d items (%d with codes)",
        version, len(users), n_user_codes, len(items), n_item_codes,
    )  # fmt: skip
    return Snapshot(manifest=manifest, users=users, items=items)


def read_catalogue(path: Path) -> dict[int, str]:
    """An optional items catalogue (parquet or JSON lines with `iid` and `title`), for items with no rows."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path, columns=["iid", "title"])
            return dict(zip(table["iid"].to_pylist(), table["title"].to_pylist(), strict=True))
        catalogue: dict[int, str] = {}
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    obj = json.loads(line)
                    if not isinstance(obj, dict) or "iid" not in obj or "title" not in obj:
                        raise DataFormatError(path, line_number, "expected an object with iid and title")
                    catalogue[int(obj["iid"])] = str(obj["title"])
        return catalogue
    except (pa.ArrowException, json.JSONDecodeError, KeyError) as exc:
        raise DataFormatError(path, None, f"not a readable items catalogue: {exc}") from exc


def snapshot_from_paths(
    codes: CodeSource,
    split_files: Sequence[Path],
    model_dir: Path,
    *,
    version: str | None = None,
    catalogue: Path | None = None,
    allow_code_mismatch: bool = False,
) -> Snapshot:
    """Read the inputs, check the codes fit the model, and build the snapshot."""
    model = load_model_manifest(model_dir)
    check_compatible(codes, model, allow_code_mismatch=allow_code_mismatch)
    table = read_splits(split_files)
    extra = read_catalogue(catalogue) if catalogue is not None else None
    return build_snapshot(codes, table, model, version=version, extra_items=extra)
