"""DirectoryStore: reads the active snapshot, follows a publish, reports what is missing."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from app.errors import SnapshotMissingError
from app.store.directory import DirectoryStore
from model_store.contract.snapshot import ACTIVE_FILENAME, ITEMS_FILENAME, USERS_FILENAME, UserEntry
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


def _rewrite(path: Path, edit: Any) -> None:
    """Replace each JSON line of `path` by `edit(row)` (rows kept as dicts)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(edit(row)) + "\n" for row in rows))


def _shift_item_codes(path: Path) -> None:
    _rewrite(path, lambda row: {**row, "code": row["code"] << 20} if row.get("code") else row)


def _negative_user_code(path: Path) -> None:
    _rewrite(path, lambda row: {**row, "code": -5} if row["id"] == "u1" else row)


def _invalid_utf8(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b'{"id": "z", "title": "caf\xe9"}\n')


def _empty(path: Path) -> None:
    path.write_text("")


@pytest.mark.parametrize(
    ("filename", "corrupt", "reason"),
    [
        (ITEMS_FILENAME, _shift_item_codes, "code_width"),
        (USERS_FILENAME, _negative_user_code, "code_sign"),
        (ITEMS_FILENAME, _invalid_utf8, "encoding"),
        (ITEMS_FILENAME, _empty, "count"),
    ],
)
def test_a_bad_new_snapshot_is_refused_and_the_last_good_one_keeps_serving(
    tmp_path: Path,
    snapshot_factory: Any,
    caplog: pytest.LogCaptureFixture,
    filename: str,
    corrupt: Any,
    reason: str,
) -> None:
    publisher = DirectoryPublisher(tmp_path)
    publisher.publish(snapshot_factory("v1"))
    labels = {"store": "directory", "file": filename, "reason": reason}
    before = REGISTRY.get_sample_value("binllm_snapshot_rejected_total", labels) or 0.0

    async def run() -> tuple[list[str], list[str]]:
        store = DirectoryStore(tmp_path, recheck_s=0.0)
        await store.open()
        publisher.publish(snapshot_factory("v2"))
        corrupt(tmp_path / "v2" / filename)
        versions = [(await store.lookup("u1", ["i1", "i2"])).manifest.version for _ in range(5)]
        return versions, await store.not_ready_reasons()

    with caplog.at_level(logging.WARNING, logger="app.store.directory"):
        versions, reasons = asyncio.run(run())
    assert versions == ["v1"] * 5 and reasons == []
    assert (
        REGISTRY.get_sample_value("binllm_snapshot_rejected_total", labels) == before + 1
    )  # once, not per check
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and f"v2/{filename}" in refused[0] and reason in refused[0]


def test_a_bad_snapshot_at_start_up_is_not_ready_naming_the_file(snapshot_dir: Path) -> None:
    version = (snapshot_dir / ACTIVE_FILENAME).read_text().strip()
    _negative_user_code(snapshot_dir / version / USERS_FILENAME)

    async def run() -> list[str]:
        store = DirectoryStore(snapshot_dir)
        await store.open()
        with pytest.raises(SnapshotMissingError):
            await store.lookup("u1", ["i1"])
        return await store.not_ready_reasons()

    (reason,) = asyncio.run(run())
    assert f"{USERS_FILENAME}:1" in reason and "negative" in reason
