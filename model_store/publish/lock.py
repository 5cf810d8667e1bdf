"""One publisher at a time per namespace: a Redis lock with an expiry, renewed while the publisher works.

Two publishers writing one namespace at once would each take the other's unlisted keys for the garbage of a
dead publish and delete them. The lock (`{ns}:publish-lock`, redis-py's `Lock`: SET NX PX with a random
token, released only by its holder) is taken before a publish or a rollback and released after it; a
publisher that dies holding it frees it when `timeout_s` expires. A live publisher renews it after every
batch (`renew`), and renews it once more right before the switch, so it switches only while it still holds
the lock: one that stalled past the timeout (and may have been overtaken) stops with an error instead.

    python -c "import redis; from model_store.publish.lock import PublishLock as L; print(L(redis.Redis(), 'binllm').held())"
"""

from __future__ import annotations

import logging
import time
from types import TracebackType

import redis
from redis.lock import Lock

from model_store.contract.snapshot import publish_lock_key
from model_store.errors import PublishError

logger = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT_S = 60.0
DEFAULT_LOCK_WAIT_S = 0.0


class PublishLock:
    """`with PublishLock(client, ns):` holds the namespace's publish lock, or raises PublishError."""

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        namespace: str,
        *,
        timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        wait_s: float = DEFAULT_LOCK_WAIT_S,
    ) -> None:
        if timeout_s <= 0:
            raise PublishError(f"the publish lock timeout must be positive, got {timeout_s}")
        self.key = publish_lock_key(namespace)
        self.client = client
        self.timeout_s = timeout_s
        self.wait_s = wait_s
        self._lock: Lock = client.lock(
            self.key, timeout=timeout_s, blocking_timeout=wait_s, thread_local=False
        )
        self._renewed_at = 0.0

    def held(self) -> bool:
        """Whether anyone holds the lock now."""
        return bool(self._lock.locked())

    def __enter__(self) -> PublishLock:
        self._check_scripting()
        try:
            acquired = self._lock.acquire(blocking=self.wait_s > 0)
        except redis.RedisError as exc:
            raise PublishError(f"could not take the publish lock {self.key}: {exc}") from exc
        if not acquired:
            ttl = self.client.pttl(self.key)
            expires = (
                f"; it expires in {ttl / 1000:.1f} s unless renewed"
                if isinstance(ttl, int) and ttl > 0
                else ""
            )
            raise PublishError(f"another publisher holds {self.key}{expires}; run one publisher at a time")
        self._renewed_at = time.monotonic()
        return self

    def _check_scripting(self) -> None:
        """The lock renews and releases itself with Lua scripts: a Redis user without +@scripting would take
        it, fail, and leave it blocking every publisher for `timeout_s`; refuse before taking it instead."""
        try:
            self.client.eval("return 1", 1, self.key)  # on the node that holds the lock key
        except redis.exceptions.NoPermissionError as exc:
            raise PublishError(
                f"the Redis user may not run scripts, which the publish lock {self.key} needs to renew and "
                f"release itself: grant +@scripting (ACL SETUSER <user> +@scripting): {exc}"
            ) from exc
        except redis.RedisError as exc:
            raise PublishError(f"could not take the publish lock {self.key}: {exc}") from exc

    def renew(self, *, force: bool = False) -> None:
        """Reset the expiry (at most every third of it unless `force`); PublishError if the lock was lost."""
        now = time.monotonic()
        if not force and now - self._renewed_at < self.timeout_s / 3:
            return
        try:
            self._lock.reacquire()
        except redis.exceptions.LockError as exc:
            raise PublishError(
                f"lost the publish lock {self.key} (held past its {self.timeout_s:g} s timeout?): stopping "
                "before the switch"
            ) from exc
        self._renewed_at = now

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._lock.release()
        except redis.exceptions.LockError:
            logger.warning("the publish lock %s had expired before release", self.key)
        except redis.RedisError as error:  # it expires by itself
            logger.warning("could not release the publish lock %s: %s", self.key, error)
