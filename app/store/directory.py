"""The embedded store: the active snapshot of a directory, read whole into memory.

Layout (from `model_store/contract/snapshot.py`): `{root}/ACTIVE` holds the version id, and
`{root}/{version}/` holds `manifest.json`, `users.jsonl`, `items.jsonl` (one `{"id": ..., **entry}` per line).
A lookup is a few dict reads. Every `recheck_s` seconds a lookup compares ACTIVE's modification time and
loads the new version when the publisher switched it, so a publish is picked up without a restart; until the
new version is fully read the old one keeps serving.

    BINLLM_STORE=directory BINLLM_SNAPSHOT_DIR=artifacts/demo/snapshot uvicorn app.main:app
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from app.errors import SnapshotMissingError
from app.store.base import CatalogLookup, history_ids
from model_store.contract.snapshot import (
    ACTIVE_FILENAME,
    ITEMS_FILENAME,
    SNAPSHOT_MANIFEST_FILENAME,
    USERS_FILENAME,
    ItemEntry,
    SnapshotManifest,
    UserEntry,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Snapshot:
    manifest: SnapshotManifest
    users: dict[str, UserEntry]
    items: dict[str, ItemEntry]


_E = TypeVar("_E", UserEntry, ItemEntry)


def _read_entries(path: Path, model: type[_E]) -> dict[str, _E]:
    entries: dict[str, _E] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                entry_id = str(row.pop("id"))
                entries[entry_id] = model.model_validate(row)
            except (ValueError, KeyError, TypeError, ValidationError) as exc:
                raise SnapshotMissingError(f"{path}:{number}: bad snapshot entry ({exc})") from exc
    return entries


def read_snapshot(root: Path) -> _Snapshot:
    """Read the active version under `root`; SnapshotMissingError says what is missing or malformed."""
    active = root / ACTIVE_FILENAME
    try:
        version = active.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SnapshotMissingError(f"no active snapshot: cannot read {active} ({exc.strerror})") from exc
    folder = root / version
    try:
        manifest = SnapshotManifest.model_validate_json((folder / SNAPSHOT_MANIFEST_FILENAME).read_bytes())
        users = _read_entries(folder / USERS_FILENAME, UserEntry)
        items = _read_entries(folder / ITEMS_FILENAME, ItemEntry)
    except OSError as exc:
        raise SnapshotMissingError(
            f"snapshot {version!r} incomplete: {exc.filename}: {exc.strerror}"
        ) from exc
    except ValidationError as exc:
        raise SnapshotMissingError(
            f"snapshot {version!r}: bad manifest ({exc.error_count()} errors)"
        ) from exc
    return _Snapshot(manifest=manifest, users=users, items=items)


class DirectoryStore:
    """CatalogStore over a snapshot directory held in memory."""

    name = "directory"

    def __init__(self, root: Path, *, recheck_s: float = 1.0) -> None:
        self.root = root
        self.recheck_s = recheck_s
        self._snapshot: _Snapshot | None = None
        self._active_mtime: float | None = None
        self._checked_at = 0.0
        self._error: str | None = None

    @property
    def manifest(self) -> SnapshotManifest | None:
        """The loaded active manifest."""
        return self._snapshot.manifest if self._snapshot is not None else None

    async def open(self) -> None:
        """Load the active snapshot now; a missing one is reported by readiness, not raised."""
        await self._reload_if_changed(force=True)

    async def _reload_if_changed(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < self.recheck_s:
            return
        self._checked_at = now
        try:
            mtime = (self.root / ACTIVE_FILENAME).stat().st_mtime
        except OSError:
            mtime = None
        if not force and mtime == self._active_mtime and self._snapshot is not None:
            return
        try:
            snapshot = await asyncio.to_thread(read_snapshot, self.root)
        except SnapshotMissingError as exc:
            self._error = exc.message
            logger.warning("directory store: %s", exc.message)
            return
        self._snapshot, self._active_mtime, self._error = snapshot, mtime, None
        logger.info("directory store: serving snapshot %s", snapshot.manifest.version)

    async def lookup(self, user_id: str, item_ids: Sequence[str]) -> CatalogLookup:
        """Dict reads against the in-memory snapshot."""
        await self._reload_if_changed()
        snapshot = self._snapshot
        if snapshot is None:
            raise SnapshotMissingError(self._error or f"no snapshot loaded from {self.root}")
        user = snapshot.users.get(user_id)
        wanted = [*item_ids, *history_ids(user)]
        items = {i: snapshot.items[i] for i in wanted if i in snapshot.items}
        return CatalogLookup(manifest=snapshot.manifest, user=user, items=items)

    async def not_ready_reasons(self) -> list[str]:
        """Ready once a snapshot is loaded."""
        if self._snapshot is None:
            return [self._error or f"no snapshot loaded from {self.root}"]
        return []

    async def aclose(self) -> None:
        """Nothing to release but memory."""
        self._snapshot = None
