"""Publish snapshots to Redis: pipelined writes under a new version, a key count, then one atomic switch.

Keys come from `model_store/contract/snapshot.py`. Entries are written in batches, one MSET each (the
manifest last, so a version with a manifest is complete), the version's keys are counted with
SCAN and compared with the snapshot, and only then does one MULTI/EXEC set `{ns}:active` and push the
version onto `{ns}:versions`. A crash or error before that leaves the active version and all its keys
untouched; the partial version is deleted on error, or, after a kill, by the next successful publish
(any `{ns}:v:*` version that is neither active nor listed is garbage). One publisher at a time is
enforced, not assumed: publish and rollback hold the namespace's `PublishLock` (`lock.py`), so a second
publisher fails fast instead of deleting the first one's unlisted keys as garbage.

    python -c "from model_store.publish.redis import RedisPublisher as R; print(R.from_url('redis://localhost:6379/0').versions())"
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import redis
from pydantic import BaseModel

from model_store.contract.snapshot import (
    DEFAULT_NAMESPACE,
    SnapshotManifest,
    active_key,
    entry_json,
    item_key,
    manifest_key,
    user_key,
    version_prefix,
    versions_key,
)
from model_store.errors import PublishError
from model_store.publish.lock import DEFAULT_LOCK_TIMEOUT_S, DEFAULT_LOCK_WAIT_S, PublishLock
from model_store.publish.snapshot import DEFAULT_KEEP, Snapshot, check_version_id

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000
_GLOB_SPECIALS = "\\*?[]"


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in _GLOB_SPECIALS else char for char in text)


def as_text(value: bytes | str | None) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class RedisPublisher:
    """Snapshot versions in one Redis namespace, with an atomically switched active pointer."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        pause_s: float = 0.0,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
    ) -> None:
        if batch_size < 1:
            raise PublishError(f"batch size must be at least 1, got {batch_size}")
        self.client = client
        self.ns = namespace
        self.batch_size = batch_size
        self.pause_s = pause_s  # a test hook: sleep between batches so a test can kill a publish midway
        self.lock = PublishLock(client, namespace, timeout_s=lock_timeout_s, wait_s=lock_wait_s)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        pause_s: float = 0.0,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
    ) -> RedisPublisher:
        """Connect and ping, so an unreachable server is one clear error before any work."""
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
            client.ping()
        except (redis.RedisError, ValueError) as exc:
            raise PublishError(f"Redis unreachable at {redact_url(url)}: {exc}") from exc
        return cls(
            client,
            namespace=namespace,
            batch_size=batch_size,
            pause_s=pause_s,
            lock_timeout_s=lock_timeout_s,
            lock_wait_s=lock_wait_s,
        )

    def active_version(self) -> str | None:
        """The version `{ns}:active` names, or None before the first publish."""
        return as_text(self.client.get(active_key(self.ns)))

    def versions(self) -> list[str]:
        """Published versions, newest first."""
        raw = self.client.lrange(versions_key(self.ns), 0, -1)
        return [text for text in (as_text(value) for value in raw) if text]

    def read_manifest(self, version: str) -> SnapshotManifest | None:
        """The manifest of a version, or None if it is missing (incomplete or deleted)."""
        raw = self.client.get(manifest_key(version, self.ns))
        return SnapshotManifest.model_validate_json(raw) if raw else None

    def publish(self, snapshot: Snapshot, *, keep: int = DEFAULT_KEEP) -> str:
        """Under the publish lock: write, count, switch atomically, prune to `keep` versions.

        Errors leave the active version as it was.
        """
        version = check_version_id(snapshot.manifest.version)
        if keep < 1:
            raise PublishError(f"--keep must be at least 1, got {keep}")
        with self.lock:
            self._publish_locked(snapshot, version, keep)
        return version

    def _publish_locked(self, snapshot: Snapshot, version: str, keep: int) -> None:
        before: str | None = None
        try:
            if self.client.exists(manifest_key(version, self.ns)) or version in self.versions():
                raise PublishError(f"version {version!r} already exists in Redis namespace {self.ns!r}")
            before = self.active_version()
            try:
                self._write(snapshot)
                self._verify(snapshot)
                self.lock.renew(force=True)  # switch only while still the one publisher
            except BaseException:
                self._discard(version)
                raise
            self._switch_to_new(version)
        except redis.RedisError as exc:
            raise PublishError(
                f"publish of {version} to Redis failed, active version still {before!r}: {exc}"
            ) from exc
        self._prune(keep)

    def rollback(self, to: str | None = None) -> str:
        """Make `to`, or the version listed after the active one, active (under the publish lock)."""
        with self.lock:
            try:
                target = self._rollback_locked(to)
            except redis.RedisError as exc:
                raise PublishError(f"rollback in Redis failed: {exc}") from exc
        logger.info("rolled back: active snapshot is now %s", target)
        return target

    def _rollback_target(self, to: str | None) -> str:
        """`to` (or the version listed after the active one) once it is verified complete: listed, with a
        manifest that parses, and exactly the manifest's counts of user and item keys (SCAN). PublishError
        otherwise, listing only the versions that could be rolled back to."""
        versions = self.versions()
        active = self.active_version()
        target = to if to is not None else version_before(list(versions), active)
        problem = "no such version" if target is None or target not in versions else self._incomplete(target)
        if problem is None:
            assert target is not None
            return target
        usable = [v for v in versions if v != target and self.client.exists(manifest_key(v, self.ns))]
        raise PublishError(
            f"cannot roll back from {active!r} to {target!r}: {problem}; "
            f"versions that can be rolled back to: {', '.join(usable) or 'none'}"
        )

    def _incomplete(self, version: str) -> str | None:
        """What is missing from a stored version (None: complete)."""
        try:
            manifest = self.read_manifest(version)
        except ValueError:
            return "its manifest is malformed"
        if manifest is None:
            return "it has no manifest"
        problems = [
            f"{found} {kind}s, the manifest says {expected}"
            for kind, expected in (("user", manifest.n_users), ("item", manifest.n_items))
            if (found := self._count(_glob_escape(f"{version_prefix(version, self.ns)}{kind}:") + "*"))
            != expected
        ]
        return "; ".join(problems) or None

    def _rollback_locked(self, to: str | None) -> str:
        """Verify the target, then set the pointer in one WATCHed transaction."""
        to = self._rollback_target(to)
        chosen: list[str] = []

        def switch(pipe: redis.client.Pipeline) -> None:
            versions = [as_text(v) for v in pipe.lrange(versions_key(self.ns), 0, -1)]
            active = as_text(pipe.get(active_key(self.ns)))
            target = to if to is not None else version_before(versions, active)
            if target is None or target not in versions or not pipe.exists(manifest_key(target, self.ns)):
                listed = ", ".join(v for v in versions if v) or "none"
                raise PublishError(f"cannot roll back from {active!r} to {target!r}; versions: {listed}")
            chosen[:] = [target]
            pipe.multi()
            pipe.set(active_key(self.ns), target)

        self.client.transaction(switch, active_key(self.ns), versions_key(self.ns))
        return chosen[0]

    def _entries(self, snapshot: Snapshot) -> Iterator[tuple[str, BaseModel]]:
        version = snapshot.manifest.version
        for user_id, user in snapshot.users.items():
            yield user_key(version, user_id, self.ns), user
        for item_id, item in snapshot.items.items():
            yield item_key(version, item_id, self.ns), item

    def _write(self, snapshot: Snapshot) -> None:
        """Entries in batches of `batch_size`, then the manifest alone: a version with one is complete."""
        batch: dict[str, str] = {}
        for key, entry in self._entries(snapshot):
            batch[key] = entry_json(entry)
            if len(batch) == self.batch_size:
                self._write_batch(batch)
                batch = {}
                if self.pause_s:
                    time.sleep(self.pause_s)
                self.lock.renew()
        if batch:
            self._write_batch(batch)
        self.client.set(manifest_key(snapshot.manifest.version, self.ns), snapshot.manifest.model_dump_json())

    def _write_batch(self, batch: dict[str, str]) -> None:
        """One MSET: one command and one reply per batch, which is what makes publishing fast in Python."""
        self.client.mset(batch)

    def _count(self, pattern: str) -> int:
        return sum(1 for _ in self.client.scan_iter(match=pattern, count=10 * self.batch_size))

    def _verify(self, snapshot: Snapshot) -> None:
        """Count the version's keys by kind and compare with the snapshot; reread the manifest."""
        version, m = snapshot.manifest.version, snapshot.manifest
        n_users = self._count(_glob_escape(user_key(version, "", self.ns)) + "*")
        n_items = self._count(_glob_escape(item_key(version, "", self.ns)) + "*")
        stored = self.read_manifest(version)
        if (n_users, n_items) != (m.n_users, m.n_items) or stored != m:
            raise PublishError(
                f"snapshot {version} failed verification in Redis: found {n_users} users and {n_items} "
                f"items, expected {m.n_users} and {m.n_items}"
            )

    def _switch_to_new(self, version: str) -> None:
        """One MULTI/EXEC: the pointer and the versions list change together or not at all."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(active_key(self.ns), version)
        pipe.lrem(versions_key(self.ns), 0, version)
        pipe.lpush(versions_key(self.ns), version)
        pipe.execute()
        logger.info("active snapshot in Redis namespace %s is now %s", self.ns, version)

    def _delete_version(self, version: str) -> int:
        """Unlink every key of a version, in batches; returns how many were deleted."""
        deleted = 0
        batch: list[str | bytes] = []
        pattern = _glob_escape(version_prefix(version, self.ns)) + "*"
        for key in self.client.scan_iter(match=pattern, count=self.batch_size):
            batch.append(key)
            if len(batch) >= self.batch_size:
                deleted += int(self.client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(self.client.unlink(*batch))
        return deleted

    def _discard(self, version: str) -> None:
        """Best-effort removal of a failed version; what is left is collected by the next publish."""
        try:
            self._delete_version(version)
        except redis.RedisError as exc:
            logger.warning(
                "could not delete the keys of failed version %s (next publish will): %s", version, exc
            )

    def _unlisted_versions(self, keep_versions: set[str]) -> set[str]:
        """Versions with keys in the namespace but neither listed nor active: interrupted publishes."""
        start = len(version_prefix("", self.ns)) - 1  # "{ns}:v:" then "{version}:..."
        pattern = _glob_escape(self.ns) + ":v:*"
        found = set()
        for key in self.client.scan_iter(match=pattern, count=self.batch_size):
            found.add((as_text(key) or "")[start:].split(":", 1)[0])
        return found - keep_versions

    def _prune(self, keep: int) -> None:
        """After a switch: delete listed versions past `keep` (never the active one) and garbage."""
        try:
            active = self.active_version()
            versions = self.versions()
            for version in [v for v in versions[keep:] if v != active]:
                self.client.lrem(versions_key(self.ns), 0, version)
                logger.info(
                    "deleted old snapshot version %s (%d keys)", version, self._delete_version(version)
                )
            listed = set(self.versions()) | ({active} if active else set())
            for version in self._unlisted_versions(listed):
                n = self._delete_version(version)
                logger.info("deleted %d keys of interrupted publish %s", n, version)
        except redis.RedisError as exc:  # the new version is active; old keys only cost memory
            logger.warning("pruning old snapshot versions failed (the publish itself succeeded): %s", exc)


def version_before(versions: list[str | None], active: str | None) -> str | None:
    """The version listed right after `active` (the one published before it), if any."""
    if active not in versions:
        return None
    index = versions.index(active)
    return versions[index + 1] if index + 1 < len(versions) else None


def redact_url(url: str) -> str:
    """The URL without a password, for error messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
