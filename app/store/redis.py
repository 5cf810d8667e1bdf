"""The catalogue in Redis: one round trip per request, always answering from exactly one snapshot version.

Each lookup sends one MULTI/EXEC transaction: `GET {ns}:active`, `EXISTS` the loaded version's manifest,
`GET` the user and `MGET` the items the in-process cache does not hold, all for the version this process has
loaded. A user's history is item ids; their titles come from the item cache, or, for history items it does
not hold yet, from one more `MGET` of the same (immutable) version. Redis runs the transaction atomically, so the pointer and the entries are read at one instant: if the
pointer still names the loaded version the answer is that version's, whole. If it moved (a publish or a
rollback), the store loads the manifest the pointer names (manifests are kept per version, so a pointer that
flaps between versions costs no reload) and reads again. If the pointer keeps moving for every attempt, the
last read is still one whole version (its keys never change and its manifest still existed in the same
transaction), and that version is what the response reports. Item entries are cached per version
(`ItemCache`); with every candidate cached the transaction holds just the GETs and the EXISTS.

Connections: a dead pooled connection (Redis restarted) is retried on a fresh one (redis-py `Retry` with
exponential backoff, connection errors only: a frozen Redis times out once, after `timeout_s`, and is not
retried), and a connection idle for `health_check_interval_s` is PINGed before use. When every pooled
connection is in use a request waits for one (a blocking pool) for up to `pool_wait_s`, and only then gets
503 `overloaded` (`OverloadedError`): a busy, healthy Redis is never reported as unavailable.

    BINLLM_STORE=redis BINLLM_REDIS_URL=redis://localhost:6379/0 uvicorn app.main:app
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool, Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisClusterException, RedisError

from app import metrics
from app.errors import (
    InvalidSnapshotError,
    OverloadedError,
    ServerError,
    SnapshotMissingError,
    StoreUnavailableError,
)
from app.store.base import CatalogLookup, ItemCache, history_ids
from app.store.verify import check_entry, parse_manifest, verify_entries
from model_store.contract.snapshot import (
    DEFAULT_NAMESPACE,
    ItemEntry,
    SnapshotManifest,
    UserEntry,
    active_key,
    item_key,
    manifest_key,
    user_key,
)

logger = logging.getLogger(__name__)

DEFAULT_VERIFY_MAX_KEYS = (
    200_000  # a new version is read whole while the database holds at most this many keys
)
_MISSING_RECHECK_S = 30.0  # a pointer naming a version without a manifest is looked at again after this
MAX_READ_ATTEMPTS = 4  # reads against a moving pointer before the last whole version read is served
_MANIFESTS_KEPT = 8  # manifests are immutable per version; a few cover any publish/rollback flapping


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode() if isinstance(raw, bytes) else raw


class PoolWaitExceededError(RedisError):
    """Every pooled connection stayed in use for the whole wait: the store is busy, not down."""


class WaitingConnectionPool(BlockingConnectionPool):
    """redis-py's blocking pool (a request waits up to `timeout` seconds for a free connection), with the
    end of that wait told apart from a failed connect: it raises PoolWaitExceededError."""

    async def get_connection(self, *args: object, **kwargs: object) -> Connection:
        """A free connection, waiting for one; PoolWaitExceededError when none frees up in time."""
        try:
            return await super().get_connection()
        except RedisConnectionError as exc:
            if isinstance(exc.__cause__, TimeoutError):  # redis-py: "No connection available." after the wait
                raise PoolWaitExceededError(
                    f"no pooled Redis connection freed up within {self.timeout} s "
                    f"({self.max_connections} in use)"
                ) from exc
            raise


# a Redis Cluster out of reach raises RedisClusterException, which is not a RedisError
STORE_ERRORS = (RedisError, RedisClusterException)


def store_error(exc: Exception) -> ServerError:
    """The service error for a failed Redis call: overloaded when the pool wait ran out (or a cluster
    node's pool is full), else unavailable."""
    if isinstance(exc, PoolWaitExceededError | MaxConnectionsError):
        return OverloadedError(str(exc), public="the catalogue store is busy; retry shortly")
    return StoreUnavailableError(f"redis unreachable: {exc}")


@dataclass(frozen=True)
class _Read:
    """What one transaction saw: the pointer, whether `version` still exists, and its entries."""

    version: str
    active: str | None
    exists: bool
    raw_user: bytes | None
    raw_items: list[bytes | None]


class RedisStore:
    """CatalogStore over redis.asyncio with a connection pool."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        item_cache_size: int = 100_000,
        max_connections: int = 64,
        timeout_s: float = 1.0,
        retries: int = 2,
        health_check_interval_s: float = 5.0,
        pool_wait_s: float = 2.0,
        verify_max_keys: int = DEFAULT_VERIFY_MAX_KEYS,
    ) -> None:
        self.namespace = namespace
        self._verify_max_keys = verify_max_keys
        self._url = url
        self._max_connections = max_connections
        self._pool_wait_s = pool_wait_s
        self._timeout_s = timeout_s
        self._retries = retries
        self._health_check_interval_s = health_check_interval_s
        self._client: aioredis.Redis | None = None
        self._manifest: SnapshotManifest | None = None
        self._manifests: OrderedDict[str, SnapshotManifest] = OrderedDict()  # verified versions
        self._refused: OrderedDict[str, tuple[float, InvalidSnapshotError]] = OrderedDict()
        self._cache = ItemCache(item_cache_size)
        self._load_lock = asyncio.Lock()
        self._error: str | None = None

    @property
    def manifest(self) -> SnapshotManifest | None:
        """The loaded active manifest."""
        return self._manifest

    @property
    def client(self) -> aioredis.Redis:
        """The pooled client (after `open`)."""
        if self._client is None:
            raise StoreUnavailableError("redis store used before open()")
        return self._client

    async def open(self) -> None:
        """Create the pool and try to load the active manifest; failure is left to readiness."""
        retry = Retry(
            ExponentialBackoff(cap=0.25, base=0.01), self._retries, supported_errors=(RedisConnectionError,)
        )
        pool = WaitingConnectionPool.from_url(
            self._url,
            max_connections=self._max_connections,
            timeout=self._pool_wait_s,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            socket_keepalive=True,
            health_check_interval=self._health_check_interval_s,
            retry=retry,
            retry_on_error=[RedisConnectionError],
        )
        self._client = aioredis.Redis.from_pool(pool)
        try:
            await self._load_active()
        except (StoreUnavailableError, SnapshotMissingError) as exc:
            logger.warning("redis store: %s", exc.message)

    def _unreachable(self, exc: Exception) -> ServerError:
        error = store_error(exc)
        if isinstance(error, StoreUnavailableError):
            self._error = error.message
        return error

    async def _load_active(self, seen: str | None = None) -> SnapshotManifest:
        """The version to serve: the one the pointer names (unless `seen` already is it) once verified, else
        the last verified one; SnapshotMissingError (or InvalidSnapshotError) only when there is none."""
        async with self._load_lock:
            version = seen
            try:
                if version is None:
                    raw = await self.client.get(active_key(self.namespace))
                    metrics.STORE_ROUND_TRIPS.labels(self.name).inc()
                    version = _text(raw)
                if version is None:  # the pointer was deleted: keep serving what is loaded
                    unset = f"no active snapshot ({active_key(self.namespace)} is unset)"
                    return self._last_verified(SnapshotMissingError(unset))
                known = self._manifests.get(version)
                if known is not None:
                    self._manifests.move_to_end(version)
                    self._manifest = known
                    return known
                refused = self._refused_version(version)
                if refused is not None:
                    return self._last_verified(refused)
                manifest = await self._verified(version)
            except STORE_ERRORS as exc:
                raise self._unreachable(exc) from exc
            except InvalidSnapshotError as exc:
                self._refuse(version or "?", exc)
                return self._last_verified(exc)
            self._manifests[version] = manifest
            while len(self._manifests) > _MANIFESTS_KEPT:
                self._manifests.popitem(last=False)
            self._manifest, self._error = manifest, None
            logger.info("redis store: serving snapshot %s", version)
            return manifest

    async def _verified(self, version: str) -> SnapshotManifest:
        """`version`'s manifest once the version passed `app/store/verify.py`'s checks."""
        raw = await self.client.get(manifest_key(version, self.namespace))
        metrics.STORE_ROUND_TRIPS.labels(self.name).inc()
        manifest = parse_manifest(raw, version)
        if manifest.version != version:
            raise InvalidSnapshotError(
                f"snapshot {version!r}: its manifest says version {manifest.version!r}",
                file="manifest",
                reason="manifest",
            )
        if await verify_entries(self.client, self._get_raw, manifest, self.namespace, self._verify_max_keys):
            logger.info("redis store: snapshot %s verified (every entry and the counts)", version)
        return manifest

    def _refused_version(self, version: str) -> InvalidSnapshotError | None:
        """Why `version` was refused, if it was (a missing manifest is looked for again after a while)."""
        refused = self._refused.get(version)
        if refused is None:
            return None
        when, exc = refused
        if exc.reason == "missing" and time.monotonic() - when > _MISSING_RECHECK_S:
            return None
        return exc

    def _refuse(self, version: str, exc: InvalidSnapshotError) -> None:
        """Remember that `version` failed validation; count and log it the first time."""
        if version not in self._refused:
            metrics.SNAPSHOT_REJECTED.labels(self.name, exc.file, exc.reason).inc()
            serving = self._manifest.version if self._manifest is not None else None
            still = f"; still serving {serving}" if serving and serving != version else ""
            logger.warning("redis store: snapshot refused: %s%s", exc.message, still)
        self._refused[version] = (time.monotonic(), exc)
        while len(self._refused) > _MANIFESTS_KEPT:
            self._refused.popitem(last=False)
        self._manifests.pop(version, None)
        if self._manifest is not None and self._manifest.version == version:  # found bad while serving it
            self._manifest = next(reversed(self._manifests.values()), None)  # back to the one verified before

    def _last_verified(self, exc: SnapshotMissingError) -> SnapshotManifest:
        """The version served so far, kept while the pointer names nothing servable; else `exc`."""
        if self._manifest is not None:
            return self._manifest
        self._error = exc.message
        raise exc

    async def _fetch(self, version: str, user_id: str, misses: list[str]) -> _Read:
        """The one round trip, atomic (MULTI/EXEC): pointer, version still there, user, missing items."""
        pipe = self.client.pipeline(transaction=True)
        pipe.get(active_key(self.namespace))
        pipe.exists(manifest_key(version, self.namespace))
        pipe.get(user_key(version, user_id, self.namespace))
        if misses:
            pipe.mget([item_key(version, item_id, self.namespace) for item_id in misses])
        try:
            results = await pipe.execute()
        except STORE_ERRORS as exc:
            raise self._unreachable(exc) from exc
        finally:
            metrics.STORE_ROUND_TRIPS.labels(self.name).inc()
        return _Read(
            version=version,
            active=_text(results[0]),
            exists=bool(results[1]),
            raw_user=results[2],
            raw_items=results[3] if misses else [],
        )

    async def lookup(self, user_id: str, item_ids: Sequence[str]) -> CatalogLookup:
        """One atomic round trip (plus two on the first request after a publish); never mixes versions.

        The manifest returned is always the one of the version whose entries were read.
        """
        manifest = self._manifest or await self._load_active()
        for attempt in range(MAX_READ_ATTEMPTS):
            hits, misses = self._cache.split(manifest.version, item_ids)
            read = await self._fetch(manifest.version, user_id, misses)
            if read.active == read.version:
                break
            unservable = read.active is None or self._refused_version(read.active) is not None
            if read.exists and unservable:
                break  # the pointer names nothing servable (deleted, or refused): keep the verified version
            if read.exists and attempt == MAX_READ_ATTEMPTS - 1:
                logger.info(
                    "redis store: pointer moved on every read; serving whole version %s", read.version
                )
                break
            if not read.exists and unservable:
                self._forget(read.version)
                raise SnapshotMissingError(
                    f"snapshot {read.version!r} was deleted and the pointer names nothing servable"
                )
            manifest = await self._load_active(seen=read.active)
        else:
            raise StoreUnavailableError("the active snapshot changed on every read; retry")
        try:
            return await self._with_history(self._decode(manifest, read, hits, misses))
        except InvalidSnapshotError as exc:  # an entry fails the checks (large databases: checked as read)
            self._refuse(manifest.version, exc)
            raise

    def _forget(self, version: str) -> None:
        """`version` is gone from Redis: stop serving it."""
        self._manifests.pop(version, None)
        if self._manifest is not None and self._manifest.version == version:
            self._manifest = None

    async def _with_history(self, lookup: CatalogLookup) -> CatalogLookup:
        """Add the items of the user's stored history: from the item cache, else one more read.

        The extra read (only for history items neither requested nor cached) reads keys of the same
        version, which never change, so the answer stays one whole version.
        """
        wanted = [i for i in dict.fromkeys(history_ids(lookup.user)) if i not in lookup.items]
        if not wanted:
            return lookup
        version = lookup.manifest.version
        hits, misses = self._cache.split(version, wanted)
        raw: list[bytes | None] = []
        if misses:
            raw = await self._get_items(version, misses)
        read = _Read(version=version, active=version, exists=True, raw_user=None, raw_items=raw)
        extra = self._decode(lookup.manifest, read, hits, misses).items
        return CatalogLookup(manifest=lookup.manifest, user=lookup.user, items=lookup.items | extra)

    async def _get_items(self, version: str, item_ids: list[str]) -> list[bytes | None]:
        """One MGET of `version`'s item entries."""
        try:
            raw = await self.client.mget([item_key(version, item_id, self.namespace) for item_id in item_ids])
        except STORE_ERRORS as exc:
            raise self._unreachable(exc) from exc
        finally:
            metrics.STORE_ROUND_TRIPS.labels(self.name).inc()
        return [value.encode() if isinstance(value, str) else value for value in raw]

    def _decode(
        self, manifest: SnapshotManifest, read: _Read, hits: dict[str, ItemEntry], misses: list[str]
    ) -> CatalogLookup:
        """Parse the entries of `read` (all of `manifest`'s version) and cache the new items."""
        metrics.ITEM_CACHE_HITS.inc(len(hits))
        metrics.ITEM_CACHE_MISSES.inc(len(misses))
        version = read.version
        user = None
        if read.raw_user is not None:
            user = check_entry(read.raw_user, UserEntry, manifest, version, "user entry")
        fetched = {
            i: check_entry(raw, ItemEntry, manifest, version, f"item {i!r}")
            for i, raw in zip(misses, read.raw_items, strict=True)
            if raw
        }
        self._cache.put(read.version, fetched)
        return CatalogLookup(manifest=manifest, user=user, items=hits | fetched)

    async def _get_raw(self, keys: list[Any]) -> list[bytes | None]:
        """The values of `keys`, one MGET (verification reads entries in batches)."""
        values = await self.client.mget(keys)
        metrics.STORE_ROUND_TRIPS.labels(self.name).inc()
        return [value.encode() if isinstance(value, str) else value for value in values]

    async def not_ready_reasons(self) -> list[str]:
        """Ready when a verified version can be served: the pointer's, or, while the pointer names nothing
        servable (deleted, or a version that failed validation), the last verified one, still in Redis.
        Exactly when `lookup` answers, so /readyz and /predict agree."""
        try:
            manifest = await self._load_active()
            exists = await self.client.exists(manifest_key(manifest.version, self.namespace))
        except (PoolWaitExceededError, OverloadedError):  # busy, not down: every connection is in use
            return [] if self._manifest is not None else ["redis busy"]
        except (*STORE_ERRORS, StoreUnavailableError) as exc:
            logger.warning("redis store not ready: %s", exc)
            return ["redis unreachable"]
        except SnapshotMissingError as exc:
            logger.warning("redis store not ready: %s", exc.message)
            return [exc.message]
        if not exists:
            self._forget(manifest.version)
            return [f"snapshot {manifest.version!r} was deleted and the pointer names nothing servable"]
        return []

    async def aclose(self) -> None:
        """Close the pool."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
