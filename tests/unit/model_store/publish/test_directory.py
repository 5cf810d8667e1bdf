"""The directory store: round trip, atomic ACTIVE switch, keep K, rollback, failures leave ACTIVE readable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_store.contract.snapshot import (
    ACTIVE_FILENAME,
    ITEMS_FILENAME,
    SNAPSHOT_MANIFEST_FILENAME,
    USERS_FILENAME,
    ItemEntry,
    ModelManifest,
    SnapshotManifest,
    UserEntry,
)
from model_store.errors import PublishError
from model_store.publish import Snapshot
from model_store.publish import directory as publish_directory
from model_store.publish.directory import DirectoryPublisher


def make_snapshot(version: str, n_users: int = 3, n_items: int = 4, second: int = 0) -> Snapshot:
    """A tiny snapshot whose titles name the version, so a test can tell versions apart."""
    users = {str(u): UserEntry(code=u, history_titles=[f"{version} seen {u}"]) for u in range(n_users)}
    items = {
        str(i): ItemEntry(code=None if i == 0 else i, title=f"{version} item {i}") for i in range(n_items)
    }
    model = ModelManifest(model_version="m", yes_token="Yes", no_token="No", yes_token_id=1, no_token_id=2)
    manifest = SnapshotManifest(
        version=version,
        code_version="c",
        model=model,
        n_users=n_users,
        n_items=n_items,
        created_at=f"2025-01-01T00:00:{second:02d}+00:00",
    )
    return Snapshot(manifest=manifest, users=users, items=items)


def read_active(root: Path) -> tuple[str, dict[str, UserEntry], dict[str, ItemEntry]]:
    """Read the active version the way the service does: ACTIVE, then the version's files."""
    version = (root / ACTIVE_FILENAME).read_text().strip()
    folder = root / version
    SnapshotManifest.model_validate_json((folder / SNAPSHOT_MANIFEST_FILENAME).read_text())
    users = {}
    for line in (folder / USERS_FILENAME).read_text().splitlines():
        obj = json.loads(line)
        users[obj.pop("id")] = UserEntry.model_validate(obj)
    items = {}
    for line in (folder / ITEMS_FILENAME).read_text().splitlines():
        obj = json.loads(line)
        items[obj.pop("id")] = ItemEntry.model_validate(obj)
    return version, users, items


def test_published_snapshot_reads_back_entry_for_entry(tmp_path: Path) -> None:
    snapshot = make_snapshot("v1")
    assert DirectoryPublisher(tmp_path).publish(snapshot) == "v1"
    version, users, items = read_active(tmp_path)
    assert version == "v1"
    assert users == snapshot.users
    assert items == snapshot.items
    assert items["0"].code is None


def test_active_is_replaced_by_a_new_file_not_rewritten_in_place(tmp_path: Path) -> None:
    publisher = DirectoryPublisher(tmp_path)
    publisher.publish(make_snapshot("v1", second=1))
    with (
        tmp_path / ACTIVE_FILENAME
    ).open() as reader_of_old:  # a reader that opened ACTIVE before the switch
        publisher.publish(make_snapshot("v2", second=2))
        assert reader_of_old.read().strip() == "v1"
    assert publisher.active_version() == "v2"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_keep_deletes_all_but_the_newest_k_versions(tmp_path: Path) -> None:
    publisher = DirectoryPublisher(tmp_path)
    for n in range(1, 5):
        publisher.publish(make_snapshot(f"v{n}", second=n), keep=2)
    assert publisher.versions() == ["v4", "v3"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [ACTIVE_FILENAME, "v3", "v4"]


def test_rollback_goes_to_the_previous_version_then_the_one_before(tmp_path: Path) -> None:
    publisher = DirectoryPublisher(tmp_path)
    for n in range(1, 4):
        publisher.publish(make_snapshot(f"v{n}", second=n))
    assert publisher.rollback() == "v2"
    assert read_active(tmp_path)[2]["1"].title == "v2 item 1"
    assert publisher.rollback() == "v1"
    with pytest.raises(PublishError, match="no version older"):
        publisher.rollback()
    assert publisher.active_version() == "v1"


def test_rollback_to_a_named_version_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    publisher = DirectoryPublisher(tmp_path)
    for n in range(1, 4):
        publisher.publish(make_snapshot(f"v{n}", second=n))
    assert publisher.rollback(to="v1") == "v1"
    with pytest.raises(PublishError, match="'v9' not found"):
        publisher.rollback(to="v9")
    assert publisher.active_version() == "v1"


def test_error_while_writing_leaves_the_active_version_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = DirectoryPublisher(tmp_path)
    publisher.publish(make_snapshot("v1", second=1))
    real_write = publish_directory._write_jsonl

    def write_then_fail(path: Path, entries: dict) -> int:
        if path.name == ITEMS_FILENAME:
            raise OSError(28, "No space left on device")
        return real_write(path, entries)

    monkeypatch.setattr(publish_directory, "_write_jsonl", write_then_fail)
    with pytest.raises(PublishError, match="No space left"):
        publisher.publish(make_snapshot("v2", second=2))
    version, users, _ = read_active(tmp_path)
    assert version == "v1" and users["2"].history_titles == ["v1 seen 2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [ACTIVE_FILENAME, "v1"]


def test_failed_switch_leaves_the_old_version_active_and_drops_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = DirectoryPublisher(tmp_path)
    publisher.publish(make_snapshot("v1", second=1))

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(publish_directory.os, "replace", failing_replace)
    with pytest.raises(PublishError, match="could not switch"):
        publisher.publish(make_snapshot("v2", second=2))
    monkeypatch.undo()
    assert read_active(tmp_path)[0] == "v1"
    assert publisher.versions() == ["v1"]


def test_leftover_of_a_killed_publish_is_ignored_and_removed_by_the_next_publish(tmp_path: Path) -> None:
    publisher = DirectoryPublisher(tmp_path)
    publisher.publish(make_snapshot("v1", second=1))
    dead = tmp_path / ".tmp-v2-99999"
    dead.mkdir()
    (dead / USERS_FILENAME).write_text('{"id": "0", "code": 1, "history_titles": []}\n')
    assert publisher.versions() == ["v1"]
    publisher.publish(make_snapshot("v3", second=3))
    assert not dead.exists()
    assert publisher.versions() == ["v3", "v1"]


def test_publishing_an_existing_version_is_refused(tmp_path: Path) -> None:
    publisher = DirectoryPublisher(tmp_path)
    publisher.publish(make_snapshot("v1"))
    with pytest.raises(PublishError, match="already exists"):
        publisher.publish(make_snapshot("v1"))


def test_keep_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="at least 1"):
        DirectoryPublisher(tmp_path).publish(make_snapshot("v1"), keep=0)
    assert DirectoryPublisher(tmp_path).active_version() is None


def test_a_switch_file_left_by_a_killed_publisher_is_removed_by_the_next_publish(tmp_path: Path) -> None:
    """A publisher killed between writing `.ACTIVE.<pid>.tmp` and renaming it leaves the file; the next publish
    deletes it, but never a live publisher's."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".{ACTIVE_FILENAME}.{dead.pid}.tmp"
    live = tmp_path / f".{ACTIVE_FILENAME}.{os.getppid()}.tmp"
    for path in (leftover, live):
        path.write_text("v0\n")
    DirectoryPublisher(tmp_path).publish(make_snapshot("v1"))
    assert not leftover.exists() and live.exists()
