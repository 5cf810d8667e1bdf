"""Validation of a snapshot version in Redis before the store serves it, and of each entry as it is read.

A version is checked when the store first meets it (the pointer moved to it): its manifest must exist and
parse, and, while the database holds at most `max_keys` keys, every user and item key of the version is read
(SCAN + batched GETs) and checked as the service will use it: UTF-8, a JSON entry of its type, a code within
the manifest's bits and not negative; then the counts must equal the manifest's. A larger database is
checked entry by entry as requests read it (`check_entry`), so a bad entry is still refused, never served.
Either way a failure is an `InvalidSnapshotError` naming what failed (`manifest`, `users`, `items`) and why.

    BINLLM_STORE=redis BINLLM_REDIS_VERIFY_MAX_KEYS=1000000 uvicorn app.main:app
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from app.errors import InvalidSnapshotError
from model_store.contract.snapshot import (
    ItemEntry,
    SnapshotManifest,
    UserEntry,
    entry_key_pattern,
    entry_problem,
)

logger = logging.getLogger(__name__)

SCAN_COUNT = 1000
BATCH = 500
_E = TypeVar("_E", UserEntry, ItemEntry)
RawGetter = Callable[[list[Any]], Awaitable[list[bytes | None]]]


def check_entry(raw: bytes | str, model: type[_E], manifest: SnapshotManifest, version: str, key: str) -> _E:
    """One stored entry as the service will use it, or InvalidSnapshotError saying why it cannot be."""
    label = "users" if model is UserEntry else "items"

    def refuse(reason: str, text: str) -> InvalidSnapshotError:
        return InvalidSnapshotError(
            f"snapshot {version!r}: {key}: {text} ({reason})", file=label, reason=reason
        )

    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise refuse("encoding", f"not UTF-8 (byte {exc.start})") from exc
    try:
        entry = model.model_validate_json(raw)
    except ValidationError as exc:
        raise refuse("malformed", f"not a {model.__name__} ({exc.error_count()} errors)") from exc
    problem = entry_problem(entry, manifest)
    if problem is not None:
        raise refuse(problem[0], f"a {problem[1]}")
    return entry


def parse_manifest(raw: bytes | str | None, version: str) -> SnapshotManifest:
    """The version's manifest, or InvalidSnapshotError when it is missing or malformed."""
    if raw is None:
        raise InvalidSnapshotError(
            f"active snapshot {version!r} has no manifest", file="manifest", reason="missing"
        )
    try:
        return SnapshotManifest.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidSnapshotError(
            f"snapshot {version!r}: bad manifest ({exc.error_count()} errors)",
            file="manifest",
            reason="manifest",
        ) from exc


async def verify_entries(
    client: Any, get_raw: RawGetter, manifest: SnapshotManifest, namespace: str, max_keys: int
) -> bool:
    """Read and check every entry of `manifest`'s version and compare the counts; False (nothing read)
    when the database holds more than `max_keys` keys. Raises InvalidSnapshotError."""
    if max_keys <= 0 or int(await client.dbsize()) > max_keys:
        return False
    await _verify_kind(client, get_raw, manifest, namespace, UserEntry, manifest.n_users)
    await _verify_kind(client, get_raw, manifest, namespace, ItemEntry, manifest.n_items)
    return True


async def _verify_kind(
    client: Any,
    get_raw: RawGetter,
    manifest: SnapshotManifest,
    namespace: str,
    model: type[_E],
    expected: int,
) -> None:
    """Every user (or item) entry of the version checked, then their count against the manifest's."""
    version = manifest.version
    kind = "user" if model is UserEntry else "item"
    found = 0
    batch: list[Any] = []
    async for key in client.scan_iter(match=entry_key_pattern(version, kind, namespace), count=SCAN_COUNT):
        batch.append(key)
        if len(batch) >= BATCH:
            found += await _check_batch(get_raw, batch, model, manifest)
            batch = []
    if batch:
        found += await _check_batch(get_raw, batch, model, manifest)
    if found != expected:
        raise InvalidSnapshotError(
            f"snapshot {version!r}: {found} {kind}s, the manifest says {expected} (count)",
            file=f"{kind}s",
            reason="count",
        )


async def _check_batch(
    get_raw: RawGetter, keys: list[Any], model: type[_E], manifest: SnapshotManifest
) -> int:
    values = await get_raw(keys)
    found = 0
    for key, raw in zip(keys, values, strict=True):
        if raw is None:  # deleted between SCAN and GET: not counted
            continue
        shown = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        check_entry(raw, model, manifest, manifest.version, shown)
        found += 1
    return found
