"""ItemCache: LRU bound, hits/misses split, and emptied when the snapshot version changes; stored
histories (item ids) resolved to titles."""

from __future__ import annotations

from app.store.base import CatalogLookup, ItemCache, history_ids, history_titles
from model_store.contract.snapshot import ItemEntry, ModelManifest, SnapshotManifest, UserEntry


def entry(title: str) -> ItemEntry:
    return ItemEntry(code=1, title=title)


def test_cache_returns_hits_and_lists_misses_in_order() -> None:
    cache = ItemCache(10)
    cache.split("v1", [])
    cache.put("v1", {"a": entry("A")})
    hits, misses = cache.split("v1", ["b", "a", "c"])
    assert list(hits) == ["a"] and misses == ["b", "c"]


def test_cache_evicts_least_recently_used_beyond_its_bound() -> None:
    cache = ItemCache(2)
    cache.split("v1", [])
    cache.put("v1", {"a": entry("A"), "b": entry("B")})
    cache.split("v1", ["a"])  # touch a: b is now the oldest
    cache.put("v1", {"c": entry("C")})
    hits, misses = cache.split("v1", ["a", "b", "c"])
    assert sorted(hits) == ["a", "c"] and misses == ["b"]


def test_cache_forgets_everything_when_the_version_changes() -> None:
    cache = ItemCache(10)
    cache.split("v1", [])
    cache.put("v1", {"a": entry("A")})
    hits, misses = cache.split("v2", ["a"])
    assert hits == {} and misses == ["a"]
    cache.put("v1", {"a": entry("old")})  # a late write for the old version is ignored
    assert len(cache) == 0


def test_cache_of_size_zero_stores_nothing() -> None:
    cache = ItemCache(0)
    cache.split("v1", [])
    cache.put("v1", {"a": entry("A")})
    assert cache.split("v1", ["a"]) == ({}, ["a"])


def lookup_for(user: UserEntry | None, items: dict[str, ItemEntry]) -> CatalogLookup:
    model = ModelManifest(model_version="m", yes_token="Yes", no_token="No", yes_token_id=1, no_token_id=2)
    manifest = SnapshotManifest(
        version="v1", code_version="c", model=model, n_users=1, n_items=len(items), created_at="now"
    )
    return CatalogLookup(manifest=manifest, user=user, items=items)


def test_history_titles_are_the_titles_of_the_stored_history_ids_newest_last() -> None:
    user = UserEntry(code=1, history=["b", "gone", "a"])
    lookup = lookup_for(user, {"a": entry("A"), "b": entry("B")})
    assert history_ids(user) == ["b", "gone", "a"]
    assert history_titles(lookup) == ("B", "A")  # an id the snapshot lacks is skipped


def test_history_titles_read_snapshots_published_with_titles_and_unknown_users() -> None:
    assert history_titles(lookup_for(UserEntry(history_titles=["Heat (1995)"]), {})) == ("Heat (1995)",)
    assert history_titles(lookup_for(None, {})) == () and history_ids(None) == []
