"""Publishing to a real redis-server: counts verified, atomic pointer switch, keep/rollback, and a publish
killed halfway (SIGKILL between pipelined batches) that leaves the active version whole."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from model_store.codes.codebook import CodeBook, write_codes
from model_store.contract.snapshot import (
    MANIFEST_FILENAME,
    ItemEntry,
    ModelManifest,
    SnapshotManifest,
    UserEntry,
    active_key,
    item_key,
    manifest_key,
    user_key,
    version_prefix,
)
from model_store.demo_data import DemoDataConfig, write_demo_data
from model_store.errors import PublishError
from model_store.publish import Snapshot
from model_store.publish.commands import PAUSE_ENV
from model_store.publish.redis import RedisPublisher

pytestmark = pytest.mark.integration


def make_snapshot(version: str, n_users: int = 5, n_items: int = 7) -> Snapshot:
    """A tiny snapshot whose titles name the version, so a test can tell versions apart."""
    users = {str(u): UserEntry(code=u, history_titles=[f"{version} seen {u}"]) for u in range(n_users)}
    items = {
        str(i): ItemEntry(code=None if i == 0 else i, title=f"{version} item {i}") for i in range(n_items)
    }
    model = ModelManifest(model_version="m", yes_token="Yes", no_token="No", yes_token_id=1, no_token_id=2)
    manifest = SnapshotManifest(
        version=version, code_version="c", model=model, n_users=n_users, n_items=n_items, created_at="now"
    )
    return Snapshot(manifest=manifest, users=users, items=items)


@pytest.fixture
def client(redis_server: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server, decode_responses=True)
    yield connection
    connection.close()


def keys_of(client: redis.Redis, version: str, ns: str) -> list[str]:
    return list(client.scan_iter(match=version_prefix(version, ns) + "*", count=1000))


def get(client: redis.Redis, key: str) -> str:
    value = client.get(key)
    assert isinstance(value, str), f"{key} is missing"
    return value


def assert_reads_back(client: redis.Redis, snapshot: Snapshot, ns: str) -> None:
    version = snapshot.manifest.version
    for user_id, entry in snapshot.users.items():
        assert UserEntry.model_validate_json(get(client, user_key(version, user_id, ns))) == entry
    for item_id, item in snapshot.items.items():
        assert ItemEntry.model_validate_json(get(client, item_key(version, item_id, ns))) == item
    assert SnapshotManifest.model_validate_json(get(client, manifest_key(version, ns))) == snapshot.manifest


def test_publish_writes_every_entry_and_switches_the_pointer(redis_server: str, client: redis.Redis) -> None:
    publisher = RedisPublisher.from_url(redis_server, namespace="roundtrip", batch_size=3)
    snapshot = make_snapshot("v1")
    assert publisher.publish(snapshot) == "v1"
    assert publisher.active_version() == "v1"
    assert publisher.versions() == ["v1"]
    assert_reads_back(client, snapshot, "roundtrip")
    assert len(keys_of(client, "v1", "roundtrip")) == 5 + 7 + 1


def test_keep_deletes_every_key_of_versions_past_k(redis_server: str, client: redis.Redis) -> None:
    publisher = RedisPublisher.from_url(redis_server, namespace="keep")
    for n in range(1, 5):
        publisher.publish(make_snapshot(f"v{n}"), keep=2)
    assert publisher.versions() == ["v4", "v3"]
    assert keys_of(client, "v1", "keep") == [] and keys_of(client, "v2", "keep") == []
    assert_reads_back(client, make_snapshot("v3"), "keep")


def test_rollback_steps_back_and_to_a_named_version(redis_server: str) -> None:
    publisher = RedisPublisher.from_url(redis_server, namespace="rollback")
    for n in range(1, 4):
        publisher.publish(make_snapshot(f"v{n}"))
    assert publisher.rollback() == "v2"
    assert publisher.rollback() == "v1"
    with pytest.raises(PublishError, match="cannot roll back"):
        publisher.rollback()
    assert publisher.rollback(to="v3") == "v3"
    with pytest.raises(PublishError, match="'v9'"):
        publisher.rollback(to="v9")
    assert publisher.active_version() == "v3"
    assert publisher.versions() == ["v3", "v2", "v1"]


def test_a_second_publisher_is_refused_while_the_first_holds_the_lock(
    redis_server: str, client: redis.Redis
) -> None:
    first = RedisPublisher.from_url(redis_server, namespace="locked")
    second = RedisPublisher.from_url(redis_server, namespace="locked")
    first.publish(make_snapshot("v1"))
    with first.lock:
        with pytest.raises(PublishError, match="another publisher holds locked:publish-lock"):
            second.publish(make_snapshot("v2"))
        with pytest.raises(PublishError, match="another publisher holds"):
            second.rollback(to="v1")
    assert keys_of(client, "v2", "locked") == []  # refused before writing anything
    assert second.publish(make_snapshot("v2")) == "v2"  # released: the next one goes through
    assert client.exists("locked:publish-lock") == 0


def test_a_publisher_that_lost_its_lock_does_not_switch(redis_server: str, client: redis.Redis) -> None:
    publisher = RedisPublisher.from_url(redis_server, namespace="lost", batch_size=2, lock_timeout_s=0.5)
    publisher.publish(make_snapshot("v1"))

    class Stalling(RedisPublisher):
        def _verify(self, snapshot: Snapshot) -> None:
            time.sleep(0.8)  # past the lock's timeout: someone else may own the namespace now
            client.set("lost:publish-lock", "someone-else")
            super()._verify(snapshot)

    stalled = Stalling(redis.Redis.from_url(redis_server), namespace="lost", lock_timeout_s=0.5)
    with pytest.raises(PublishError, match="lost the publish lock"):
        stalled.publish(make_snapshot("v2"))
    assert publisher.active_version() == "v1" and keys_of(client, "v2", "lost") == []
    assert client.get("lost:publish-lock") == "someone-else"  # never deleted someone else's lock


def test_rollback_subcommand_switches_back(redis_server: str, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path)
    target = ["--redis", redis_server, "--namespace", "cli"]
    for version in ("v1", "v2"):
        child = binllm("publish", *inputs, *target, "--version", version)
        assert child.wait(timeout=60) == 0, child.stderr.read().decode() if child.stderr else ""
    back = binllm("publish", "rollback", *target)
    assert back.wait(timeout=60) == 0 and back.stdout is not None
    assert back.stdout.read().decode().strip() == "rolled back: active version is now v1"
    assert RedisPublisher.from_url(redis_server, namespace="cli").active_version() == "v1"


class DroppingPublisher(RedisPublisher):
    """Loses one entry on the way, as a buggy or interrupted writer would."""

    def _entries(self, snapshot: Snapshot):  # type: ignore[no-untyped-def]
        entries = list(super()._entries(snapshot))
        return iter(entries[1:])


def test_count_mismatch_refuses_the_switch_and_deletes_the_partial_version(
    redis_server: str, client: redis.Redis
) -> None:
    RedisPublisher.from_url(redis_server, namespace="verify").publish(make_snapshot("v1"))
    broken = DroppingPublisher(redis.Redis.from_url(redis_server), namespace="verify")
    with pytest.raises(PublishError, match="failed verification"):
        broken.publish(make_snapshot("v2"))
    assert broken.active_version() == "v1"
    assert keys_of(client, "v2", "verify") == []
    assert_reads_back(client, make_snapshot("v1"), "verify")


def test_unreachable_redis_is_one_clear_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PublishError, match=f"Redis unreachable at redis://127.0.0.1:{port}"):
        RedisPublisher.from_url(f"redis://127.0.0.1:{port}/0")


def write_inputs(root: Path) -> list[str]:
    """A demo data dir, a hand-made codes dir (even ids only) and a model manifest naming those codes."""
    write_demo_data(DemoDataConfig(n_users=150, n_items=200, min_per_user=5, max_per_user=10), root / "data")
    users, items = np.arange(2, 151, 2, dtype=np.int64), np.arange(2, 201, 2, dtype=np.int64)
    book = CodeBook(
        bits=32,
        user_ids=users,
        user_codes=(users * 7919).astype(np.uint64),
        item_ids=items,
        item_codes=(items * 104729).astype(np.uint64),
        unknown_user_code=0,
        unknown_item_code=0,
        scale=1.0,
        bias=0.0,
    )
    write_codes(book, root / "codes")
    manifest = ModelManifest(
        model_version="m",
        yes_token="Yes",
        no_token="No",
        yes_token_id=1,
        no_token_id=2,
        code_version=book.version,
    )
    (root / "model").mkdir()
    (root / "model" / MANIFEST_FILENAME).write_text(manifest.model_dump_json())
    return ["--codes", str(root / "codes"), "--data", str(root / "data"), "--model", str(root / "model")]


def binllm(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`binllm ARGS` in a child process (the console script's entry point, in this interpreter)."""
    code = "from model_store.cli import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def test_publish_killed_halfway_leaves_the_active_version_whole(
    redis_server: str, client: redis.Redis, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path)
    target = ["--redis", redis_server, "--namespace", "kill"]
    first = binllm("publish", *inputs, *target, "--version", "v1")
    assert first.wait(timeout=60) == 0, first.stderr.read().decode() if first.stderr else ""
    old_keys = sorted(keys_of(client, "v1", "kill"))
    old_values = dict(zip(old_keys, client.mget(old_keys), strict=True))
    assert len(old_keys) > 150  # users + items + manifest

    child = binllm(
        "publish", *inputs, *target, "--version", "v2", "--batch-size", "10", "--lock-timeout", "5",
        env={PAUSE_ENV: "0.2"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(keys_of(client, "v2", "kill")) < 30:  # three batches of ten are in
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "the child wrote nothing in 60 s"
            assert client.get(active_key("kill")) == "v1"  # readers keep the old version while it writes
            time.sleep(0.05)
        child.kill()  # SIGKILL: no except/finally in the child runs
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -9
    partial = keys_of(client, "v2", "kill")
    assert 30 <= len(partial) < len(old_keys) and manifest_key("v2", "kill") not in partial
    publisher = RedisPublisher.from_url(redis_server, namespace="kill")
    assert publisher.active_version() == "v1"
    assert publisher.versions() == ["v1"]
    assert dict(zip(old_keys, client.mget(old_keys), strict=True)) == old_values  # every old entry intact

    assert 0 < client.pttl("kill:publish-lock") <= 5000  # the dead child's lock stays until it expires
    with pytest.raises(PublishError, match="another publisher holds kill:publish-lock"):
        publisher.publish(make_snapshot("v3"))
    again = binllm("publish", *inputs, *target, "--version", "v3", "--lock-wait", "30")  # until it expires
    assert again.wait(timeout=60) == 0, again.stderr.read().decode() if again.stderr else ""
    assert publisher.active_version() == "v3"
    assert publisher.versions() == ["v3", "v1"]
    assert keys_of(client, "v2", "kill") == []  # the dead version's keys were collected as garbage
    assert dict(zip(old_keys, client.mget(old_keys), strict=True)) == old_values


class DemoCodes:
    version = "codes-demo"
    bits = 32

    def user_code(self, uid: int) -> int | None:
        return uid

    def item_code(self, iid: int) -> int | None:
        return iid

    def code_score(self) -> None:
        return None


def test_demo_build_publishes_to_redis_once_and_skips_when_current(
    redis_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_store import demo

    def fake_model(paths: demo.DemoPaths, codes: DemoCodes) -> ModelManifest:
        manifest = ModelManifest(
            model_version="demo-m", yes_token="Yes", no_token="No", yes_token_id=1, no_token_id=2
        )
        paths.model.mkdir(parents=True, exist_ok=True)
        (paths.model / MANIFEST_FILENAME).write_text(manifest.model_dump_json())
        return manifest

    monkeypatch.setattr(demo, "ensure_codes", lambda paths, retrain=False: DemoCodes())
    monkeypatch.setattr(demo, "ensure_model", fake_model)
    small = DemoDataConfig(n_users=10, n_items=15, min_per_user=4, max_per_user=6)
    first = demo.build_demo(
        tmp_path, redis_url=redis_server, namespace="demo", data_config=small, source="synthetic"
    )
    second = demo.build_demo(
        tmp_path, redis_url=redis_server, namespace="demo", data_config=small, source="synthetic"
    )
    assert first["redis_version"] == second["redis_version"]
    publisher = RedisPublisher.from_url(redis_server, namespace="demo")
    assert publisher.versions() == [first["redis_version"]]
    manifest = publisher.read_manifest(first["redis_version"])
    assert manifest is not None and manifest.n_users == 10 and manifest.code_version == "codes-demo"


def test_a_redis_user_without_scripting_is_refused_before_the_lock_is_taken(
    redis_server: str, client: redis.Redis
) -> None:
    """The lock renews and releases itself with Lua: without +@scripting a publish would take it, fail, and
    leave it to block every publisher for its whole timeout."""
    client.execute_command("ACL", "SETUSER", "nolua", "on", ">pw-nolua", "~*", "&*", "+@all", "-@scripting")
    url = redis_server.replace("redis://", "redis://nolua:pw-nolua@")
    publisher = RedisPublisher.from_url(url, namespace="nolua")
    with pytest.raises(PublishError, match=r"\+@scripting"):
        publisher.publish(make_snapshot("v1"))
    assert client.exists("nolua:publish-lock") == 0
    assert RedisPublisher.from_url(redis_server, namespace="nolua").publish(make_snapshot("v1")) == "v1"
