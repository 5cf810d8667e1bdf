"""DirectoryStore: reads the active snapshot, follows a publish, reports what is missing."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from app.errors import SnapshotMissingError
from app.store.directory import DirectoryStore
from model_store.contract.snapshot import ACTIVE_FILENAME, ITEMS_FILENAME, UserEntry
from model_store.publish.directory import DirectoryPublisher


def test_lookup_returns_manifest_user_and_only_known_items(snapshot_dir: Path) -> None:
    async def run() -> Any:
        store = DirectoryStore(snapshot_dir)
        await store.open()
        return await store.lookup("u1", ["i1", "nope"]), await store.not_ready_reasons()

    found, reasons = asyncio.run(run())
    assert found.manifest.version == "v1" and found.user is not None and found.user.code == 0xF0F0F0F0
    assert list(found.items) == ["i1"] and reasons == []


def test_lookup_adds_the_items_of_the_users_stored_history(tmp_path: Path, snapshot_factory: Any) -> None:
    snapshot = snapshot_factory("v1")
    users = {**snapshot.users, "u9": UserEntry(code=3, history=["h1", "h2"])}
    manifest = snapshot.manifest.model_copy(update={"n_users": len(users)})
    DirectoryPublisher(tmp_path).publish(replace(snapshot, users=users, manifest=manifest))

    async def run() -> Any:
        store = DirectoryStore(tmp_path)
        await store.open()
        return await store.lookup("u9", ["i1"])

    found = asyncio.run(run())
    assert found.user is not None and found.user.history == ["h1", "h2"]
    assert set(found.items) == {"i1", "h1", "h2"}


def test_store_switches_to_a_newly_published_version(tmp_path: Path, snapshot_factory: Any) -> None:
    publisher = DirectoryPublisher(tmp_path)
    publisher.publish(snapshot_factory("v1"))

    async def run() -> tuple[str, str]:
        store = DirectoryStore(tmp_path, recheck_s=0.0)
        await store.open()
        before = (await store.lookup("u1", [])).manifest.version
        publisher.publish(snapshot_factory("v2"))
        return before, (await store.lookup("u1", [])).manifest.version

    assert asyncio.run(run()) == ("v1", "v2")


def test_missing_snapshot_is_reported_not_raised_at_open(tmp_path: Path) -> None:
    async def run() -> list[str]:
        store = DirectoryStore(tmp_path)
        await store.open()
        with pytest.raises(SnapshotMissingError):
            await store.lookup("u1", ["i1"])
        return await store.not_ready_reasons()

    (reason,) = asyncio.run(run())
    assert ACTIVE_FILENAME in reason


def test_malformed_entry_names_file_and_line(snapshot_dir: Path) -> None:
    version = (snapshot_dir / ACTIVE_FILENAME).read_text().strip()
    items = snapshot_dir / version / ITEMS_FILENAME
    items.write_text(items.read_text() + '{"id": "x", "code": 1}\n')  # no title

    async def run() -> list[str]:
        store = DirectoryStore(snapshot_dir)
        await store.open()
        return await store.not_ready_reasons()

    (reason,) = asyncio.run(run())
    assert f"{ITEMS_FILENAME}:6" in reason
