"""The embedded store: the active snapshot of a directory, read whole into memory.

Layout (from `model_store/contract/snapshot.py`): `{root}/ACTIVE` holds the version id, and
`{root}/{version}/` holds `manifest.json`, `users.jsonl`, `items.jsonl` (one `{"id": ..., **entry}` per line).
A lookup is a few dict reads. Every `recheck_s` seconds a lookup compares ACTIVE's modification time and
loads the new version when the publisher switched it, so a publish is picked up without a restart; until the
new version is fully read the old one keeps serving. A version is validated as it is read (every line UTF-8
and an entry, every code within the manifest's bits and not negative, the counts equal to the manifest's); one
that fails is refused, once per ACTIVE change: the last good version keeps serving, and the log and
`binllm_snapshot_rejected_total{store,file,reason}` name the file and the reason. Deleting ACTIVE also keeps
the loaded version serving (and /readyz ready): the pointer is only read to find a newer version.

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

from app import metrics
from app.errors import InvalidSnapshotError, SnapshotMissingError
from app.store.base import CatalogLookup, history_ids
from model_store.contract.snapshot import (
    ACTIVE_FILENAME,
    ITEMS_FILENAME,
    SNAPSHOT_MANIFEST_FILENAME,
    USERS_FILENAME,
    ItemEntry,
    SnapshotManifest,
    UserEntry,
    entry_problem,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Snapshot:
    manifest: SnapshotManifest
    users: dict[str, UserEntry]
    items: dict[str, ItemEntry]


_E = TypeVar("_E", UserEntry, ItemEntry)


def _read_entries(path: Path, model: type[_E], manifest: SnapshotManifest, expected: int) -> dict[str, _E]:
    """Every entry of one JSONL file, each checked as the service will use it: UTF-8, JSON of the entry
    type, a code that fits the manifest's bits and is not negative, an embedding of the manifest's width
    (`entry_problem`); then the count against the manifest.
    InvalidSnapshotError names the file, the line and the reason."""
    shown = f"{path.parent.name}/{path.name}"

    def refuse(reason: str, text: str) -> InvalidSnapshotError:
        return InvalidSnapshotError(f"{shown}: {text} ({reason})", file=path.name, reason=reason)

    entries: dict[str, _E] = {}
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise refuse("encoding", f"line {number} is not UTF-8 (byte {exc.start})") from exc
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                entry_id = str(row.pop("id"))
                entry = model.model_validate(row)
            except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
                raise refuse("malformed", f"{shown}:{number}: bad snapshot entry ({exc})") from exc
            problem = entry_problem(entry, manifest)
            if problem is not None:
                raise refuse(problem[0], f"{shown}:{number}: entry {entry_id!r} has a {problem[1]}")
            entries[entry_id] = entry
    if len(entries) != expected:
        raise refuse("count", f"{len(entries)} distinct entries, the manifest says {expected}")
    return entries


def read_snapshot(root: Path) -> _Snapshot:
    """Read and validate the active version under `root`: SnapshotMissingError when there is none,
    InvalidSnapshotError (naming the file and the reason) when it is incomplete or malformed."""
    active = root / ACTIVE_FILENAME
    try:
        version = active.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotMissingError(f"no active snapshot: cannot read {active} ({exc})") from exc
    folder = root / version
    try:
        manifest = SnapshotManifest.model_validate_json((folder / SNAPSHOT_MANIFEST_FILENAME).read_bytes())
    except OSError as exc:
        raise InvalidSnapshotError(
            f"snapshot {version!r} incomplete: {exc.filename}: {exc.strerror}",
            file=SNAPSHOT_MANIFEST_FILENAME,
            reason="missing",
        ) from exc
    except ValidationError as exc:
        raise InvalidSnapshotError(
            f"snapshot {version!r}: bad manifest ({exc.error_count()} errors)",
            file=SNAPSHOT_MANIFEST_FILENAME,
            reason="manifest",
        ) from exc
    try:
        users = _read_entries(folder / USERS_FILENAME, UserEntry, manifest, manifest.n_users)
        items = _read_entries(folder / ITEMS_FILENAME, ItemEntry, manifest, manifest.n_items)
    except OSError as exc:
        name = Path(str(exc.filename)).name
        raise InvalidSnapshotError(
            f"snapshot {version!r} incomplete: {exc.filename}: {exc.strerror}", file=name, reason="missing"
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
        self._failed_mtime: float | None = -1.0  # ACTIVE's mtime when a read last failed (-1: none failed)
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
        if not force and mtime in (self._active_mtime, self._failed_mtime):
            return  # nothing new since the version loaded, or since the one refused
        try:
            snapshot = await asyncio.to_thread(read_snapshot, self.root)
        except SnapshotMissingError as exc:
            self._failed_mtime = mtime
            self._refused(exc)
            return
        self._snapshot, self._active_mtime, self._failed_mtime, self._error = snapshot, mtime, None, None
        logger.info("directory store: serving snapshot %s", snapshot.manifest.version)

    def _refused(self, exc: SnapshotMissingError) -> None:
        """Log (and count, for a version that failed validation) why nothing new was loaded."""
        serving = self._snapshot.manifest.version if self._snapshot is not None else None
        still = f"; still serving {serving}" if serving else ""
        if isinstance(exc, InvalidSnapshotError):
            metrics.SNAPSHOT_REJECTED.labels(self.name, exc.file, exc.reason).inc()
            logger.warning("directory store: snapshot refused: %s%s", exc.message, still)
        else:
            logger.warning("directory store: %s%s", exc.message, still)
        if self._snapshot is None:
            self._error = exc.message

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
