"""The catalogue store interface: one lookup per request returns the snapshot, the user and the items.

A published snapshot (see `model_store/contract/snapshot.py`) is immutable once active, so whatever a store
returns for one version stays true: that is what makes the in-process item cache (`ItemCache`) safe.
Implementations: `RedisStore` (one pipelined round trip per request) and `DirectoryStore` (a snapshot
directory read into memory, the embedded default).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from model_store.contract.snapshot import ItemEntry, SnapshotManifest, UserEntry


@dataclass(frozen=True)
class CatalogLookup:
    """Everything one request needs from the active snapshot; `items` holds only the ids found."""

    manifest: SnapshotManifest
    user: UserEntry | None
    items: dict[str, ItemEntry]


def history_titles(lookup: CatalogLookup) -> tuple[str, ...]:
    """The stored user's history as titles, newest last: each history id's item title (ids the snapshot
    lacks are skipped), or the titles themselves from a snapshot published before item-id histories."""
    if lookup.user is None:
        return ()
    if not lookup.user.history:
        return tuple(lookup.user.history_titles)
    return tuple(lookup.items[i].title for i in lookup.user.history if i in lookup.items)


def history_ids(user: UserEntry | None) -> list[str]:
    """The item ids a stored user's prompt needs besides the candidates."""
    return list(user.history) if user is not None else []


class CatalogStore(Protocol):
    """Where the service reads users and items of the active snapshot."""

    name: str

    @property
    def manifest(self) -> SnapshotManifest | None:
        """The manifest of the snapshot this process serves now, if one is loaded."""
        ...

    async def open(self) -> None:
        """Connect / load; must not raise when the snapshot is missing (readiness reports that)."""
        ...

    async def lookup(self, user_id: str, item_ids: Sequence[str]) -> CatalogLookup:
        """The active manifest, the user (None if unknown) and the known items among distinct `item_ids`
        and the user's stored history (whose titles the prompt shows), all of one snapshot version.

        Raises StoreUnavailableError when the store cannot be reached, SnapshotMissingError when no snapshot
        is active.
        """
        ...

    async def not_ready_reasons(self) -> list[str]:
        """Why the store cannot serve now; empty when ready (used by /readyz)."""
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks."""
        ...


class ItemCache:
    """A bounded LRU of item entries for one snapshot version; switching version empties it.

    Items of one version never change, so a hit is always right; the bound keeps memory flat for big
    catalogues. Hits and misses are counted by the caller (metrics), not here.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.version: str | None = None
        self._entries: OrderedDict[str, ItemEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def split(self, version: str, item_ids: Iterable[str]) -> tuple[dict[str, ItemEntry], list[str]]:
        """(hits, misses) of distinct `item_ids` for `version`."""
        if version != self.version:
            self._entries.clear()
            self.version = version
        hits: dict[str, ItemEntry] = {}
        misses: list[str] = []
        for item_id in item_ids:
            entry = self._entries.get(item_id)
            if entry is None:
                misses.append(item_id)
            else:
                self._entries.move_to_end(item_id)
                hits[item_id] = entry
        return hits, misses

    def put(self, version: str, entries: dict[str, ItemEntry]) -> None:
        """Remember entries read for `version` (ignored if the cache moved on to another version)."""
        if self.max_entries <= 0 or version != self.version:
            return
        for item_id, entry in entries.items():
            self._entries[item_id] = entry
            self._entries.move_to_end(item_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
