"""What every snapshot store of the publisher offers: publish, roll back, list versions.

Implementations: `DirectoryPublisher` (`directory.py`), `RedisPublisher` (`redis.py`) and
`RedisClusterPublisher` (`cluster.py`).
"""

from __future__ import annotations

from typing import Protocol

from model_store.contract.snapshot import SnapshotManifest
from model_store.publish.snapshot import DEFAULT_KEEP, Snapshot


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
