"""Publish snapshots to a local directory: write a hidden temp dir, rename it into place, replace ACTIVE.

The directory store is what the embedded default service reads (`app/settings.py` DEFAULT_SNAPSHOT_DIR).
Layout (`model_store/contract/snapshot.py`): `{root}/ACTIVE` holds the active version id; each complete
version is `{root}/{version}/` with `manifest.json`, `users.jsonl`, `items.jsonl`. A version is written into
`{root}/.tmp-{version}-{pid}/`, fsynced, counted back, renamed to `{root}/{version}` (atomic on one file
system), and only then is ACTIVE replaced with `os.replace` of a fsynced temp file: a reader sees either
the old version or the new one, never half of either. A crash leaves at most a `.tmp-*` directory and a
`.ACTIVE.<pid>.tmp` file, which the next successful publish deletes (the file only once its process is gone).

    python -c "from model_store.publish.directory import DirectoryPublisher as D; print(D('artifacts/demo/snapshot').versions())"
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel, ValidationError

from model_store.contract.snapshot import (
    ACTIVE_FILENAME,
    ITEMS_FILENAME,
    SNAPSHOT_MANIFEST_FILENAME,
    USERS_FILENAME,
    SnapshotManifest,
)
from model_store.errors import PublishError
from model_store.publish.snapshot import DEFAULT_KEEP, Snapshot, check_version_id

logger = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"


def _alive(pid: int) -> bool:
    """Whether a process with this id runs (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_jsonl(path: Path, entries: Mapping[str, BaseModel]) -> int:
    """One `{"id": ..., **entry}` object per line; returns the number of lines."""
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for entry_id, entry in entries.items():
            handle.write(
                json.dumps({"id": entry_id, **entry.model_dump(exclude_defaults=True)}, ensure_ascii=False)
                + "\n"
            )
            count += 1
        handle.flush()
        os.fsync(handle.fileno())
    return count


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


class DirectoryPublisher:
    """A directory of snapshot versions with an atomically replaced ACTIVE file."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def active_version(self) -> str | None:
        """The version named by ACTIVE, or None before the first publish."""
        path = self.root / ACTIVE_FILENAME
        if not path.is_file():
            return None
        return path.read_text(encoding="utf-8").strip() or None

    def read_manifest(self, version: str) -> SnapshotManifest | None:
        """The manifest of a complete version; None if there is none, PublishError if it is damaged."""
        path = self.root / version / SNAPSHOT_MANIFEST_FILENAME
        if not path.is_file():
            return None
        try:
            return SnapshotManifest.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValidationError) as exc:
            raise PublishError(f"version {version!r} is damaged in {self.root}: {exc}") from exc

    def versions(self) -> list[str]:
        """Complete versions (those with a readable manifest), newest first by creation time."""
        if not self.root.is_dir():
            return []
        found: list[tuple[str, str]] = []
        for path in self.root.iterdir():
            if path.name.startswith("."):
                continue
            try:
                manifest = self.read_manifest(path.name)
            except PublishError:
                logger.warning("ignoring damaged snapshot version %s", path)
                continue
            if manifest is not None:
                found.append((manifest.created_at, path.name))
        return [name for _, name in sorted(found, reverse=True)]

    def publish(self, snapshot: Snapshot, *, keep: int = DEFAULT_KEEP) -> str:
        """Write, verify, rename into place, switch ACTIVE, then prune to `keep` versions."""
        version = check_version_id(snapshot.manifest.version)
        if keep < 1:
            raise PublishError(f"--keep must be at least 1, got {keep}")
        final = self.root / version
        if final.exists():
            raise PublishError(f"version {version!r} already exists in {self.root}")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{_TMP_PREFIX}{version}-{os.getpid()}"
        try:
            tmp.mkdir()
            self._write_version(tmp, snapshot)
            self._verify(tmp, snapshot)
            os.rename(tmp, final)
            _fsync_dir(self.root)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise PublishError(f"could not write snapshot {version} to {self.root}: {exc}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            self._switch(version)
        except PublishError:
            shutil.rmtree(final, ignore_errors=True)  # never activated: not a version to roll back to
            raise
        self._prune(keep)
        return version

    def rollback(self, to: str | None = None) -> str:
        """Make `to`, or the version published before the active one, active again."""
        versions = self.versions()
        active = self.active_version()
        if to is not None:
            if to not in versions:
                raise PublishError(
                    f"version {to!r} not found in {self.root}; have {', '.join(versions) or 'none'}"
                )
            target = to
        else:
            if active not in versions:
                raise PublishError(f"no active version in {self.root} to roll back from")
            older = versions[versions.index(active) + 1 :]
            if not older:
                raise PublishError(f"no version older than {active!r} in {self.root}")
            target = older[0]
        self._switch(target)
        return target

    def _write_version(self, directory: Path, snapshot: Snapshot) -> None:
        _write_jsonl(directory / USERS_FILENAME, snapshot.users)
        _write_jsonl(directory / ITEMS_FILENAME, snapshot.items)
        manifest_path = directory / SNAPSHOT_MANIFEST_FILENAME
        with manifest_path.open("w", encoding="utf-8") as handle:  # last: a manifest marks a complete version
            handle.write(snapshot.manifest.model_dump_json(indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(directory)

    def _verify(self, directory: Path, snapshot: Snapshot) -> None:
        n_users = _count_lines(directory / USERS_FILENAME)
        n_items = _count_lines(directory / ITEMS_FILENAME)
        manifest = SnapshotManifest.model_validate_json(
            (directory / SNAPSHOT_MANIFEST_FILENAME).read_text(encoding="utf-8")
        )
        expected = (snapshot.manifest.n_users, snapshot.manifest.n_items)
        if (n_users, n_items) != expected or manifest != snapshot.manifest:
            raise PublishError(
                f"snapshot {snapshot.manifest.version} failed verification: wrote {n_users} users and "
                f"{n_items} items, expected {expected[0]} and {expected[1]}"
            )

    def _switch(self, version: str) -> None:
        """Replace ACTIVE in one rename: readers see the old id or the new one."""
        tmp = self.root / f".{ACTIVE_FILENAME}.{os.getpid()}.tmp"
        try:
            with tmp.open("w", encoding="utf-8") as handle:
                handle.write(version + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.root / ACTIVE_FILENAME)
            _fsync_dir(self.root)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise PublishError(f"could not switch {self.root / ACTIVE_FILENAME} to {version}: {exc}") from exc
        logger.info("active snapshot in %s is now %s", self.root, version)

    def _prune(self, keep: int) -> None:
        """Delete versions past the newest `keep` (never the active one) and temp dirs of dead publishes."""
        active = self.active_version()
        stale: Iterable[str] = [v for v in self.versions()[keep:] if v != active]
        for version in stale:
            shutil.rmtree(self.root / version, ignore_errors=True)
            logger.info("deleted old snapshot version %s", version)
        for path in self.root.glob(f"{_TMP_PREFIX}*"):
            shutil.rmtree(path, ignore_errors=True)
            logger.info("deleted leftover %s of an interrupted publish", path.name)
        for path in self.root.glob(f".{ACTIVE_FILENAME}.*.tmp"):  # a switch killed before its rename
            pid = path.name.split(".")[2]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                path.unlink(missing_ok=True)
                logger.info("deleted leftover %s of an interrupted publish", path.name)
