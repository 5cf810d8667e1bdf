"""The catalogue in a Redis Cluster: one round trip per node, sent in parallel, answering from one version.

User and item keys hash to slots all over the cluster, so the single-node store's MULTI/EXEC (one node, one
instant) is not available. What keeps an answer whole is the key layout: every entry key names its version
(`{ns}:v:{version}:...`) and a version's keys never change once written. A lookup sends one non-transactional
pipeline of `GET {ns}:active`, `EXISTS` the loaded version's manifest, `GET` the user and a `GET` per item the
cache lacks, all for the version this process has loaded; redis-py's `ClusterPipeline` groups the commands by
node and sends each node its share at the same time (`asyncio.gather`), so a lookup costs one round trip per
node touched, in parallel. The entries read are all the loaded version's; if the pointer read in the same
pipeline names another version, the store loads that version's manifest and reads again, exactly as the
single-node store does (`RedisStore.lookup`), so the reported version is always the one whose entries answer.

The version switch the publisher makes is one write of one key (`model_store/publish/cluster.py`). When a
primary dies its slots are out of reach until a replica is promoted (`cluster-node-timeout` plus an
election: seconds). The client refreshes its slot table on each connection error and retries with backoff
for `failover_s` (`BINLLM_REDIS_FAILOVER_S`), so a failover shows as a slower answer, not an error; a request
that still fails answers 503, never a mixed version. A cluster with no node in reach fails at once (redis-py
gives up when a refresh reaches no node), so an outage is not hidden behind the retries.

    BINLLM_STORE=redis BINLLM_REDIS_URL=redis+cluster://localhost:7000 uvicorn app.main:app
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app import metrics
from app.errors import SnapshotMissingError, StoreUnavailableError
from app.store.redis import DEFAULT_VERIFY_MAX_KEYS, STORE_ERRORS, RedisStore, _Read, _text
from model_store.contract.snapshot import (
    DEFAULT_NAMESPACE,
    active_key,
    cluster_seed_nodes,
    item_key,
    manifest_key,
    split_cluster_url,
    user_key,
)

logger = logging.getLogger(__name__)

# Delays 0.1, 0.2, 0.4 s, then 0.5 s each: a promoted replica is found within half a second of its election.
FAILOVER_BACKOFF_BASE_S = 0.05
FAILOVER_BACKOFF_CAP_S = 0.5
# A refresh asked for by an error runs at most this often (redis-py's default is 1 s, a second lost per failover).
TOPOLOGY_REFRESH_MIN_INTERVAL_S = 0.25


def retries_covering(backoff: ExponentialBackoff, seconds: float) -> int:
    """The retries whose backoff delays add up to at least `seconds`: redis-py counts retries, an operator
    thinks of how long a failover may take."""
    waited, retries = 0.0, 0
    while waited < seconds:
        retries += 1
        waited += backoff.compute(retries)
    return retries


class RedisClusterStore(RedisStore):
    """CatalogStore over redis.asyncio's `RedisCluster` (a pool per node, slot table refreshed on errors)."""

    name = "redis"  # same metric labels as the single-node store: it is one kind of store to operators

    def __init__(
        self,
        url: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        item_cache_size: int = 100_000,
        max_connections: int = 64,
        timeout_s: float = 1.0,
        failover_s: float = 6.0,
        health_check_interval_s: float = 5.0,
        pool_wait_s: float = 2.0,
        verify_max_keys: int = DEFAULT_VERIFY_MAX_KEYS,
    ) -> None:
        super().__init__(
            split_cluster_url(url)[0],
            namespace=namespace,
            item_cache_size=item_cache_size,
            max_connections=max_connections,
            timeout_s=timeout_s,
            retries=0,  # the cluster client's retry is sized by failover_s below
            health_check_interval_s=health_check_interval_s,
            pool_wait_s=pool_wait_s,
            verify_max_keys=verify_max_keys,
        )
        self._failover_s = failover_s

    async def open(self) -> None:
        """Discover the cluster from any live seed node of the URL and try to load the active manifest;
        with the cluster out of reach it opens anyway (not ready) and discovers it on a later call."""
        backoff = ExponentialBackoff(cap=FAILOVER_BACKOFF_CAP_S, base=FAILOVER_BACKOFF_BASE_S)
        retry = Retry(backoff, retries_covering(backoff, self._failover_s))
        first, seeds = cluster_seed_nodes(self._url)
        self._client = RedisCluster.from_url(  # type: ignore[assignment]
            first,
            startup_nodes=[ClusterNode(host, port) for host, port in seeds[1:]],
            max_connections=self._max_connections,
            socket_timeout=self._timeout_s,
            socket_connect_timeout=self._timeout_s,
            socket_keepalive=True,
            health_check_interval=self._health_check_interval_s,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            topology_refresh_min_interval=TOPOLOGY_REFRESH_MIN_INTERVAL_S,
        )
        try:
            await self._load_active()
        except (StoreUnavailableError, SnapshotMissingError) as exc:
            logger.warning("redis cluster store: %s", exc.message)

    @property
    def cluster(self) -> RedisCluster:
        """The cluster client (after `open`)."""
        return self.client  # type: ignore[return-value]

    async def _fetch(self, version: str, user_id: str, misses: list[str]) -> _Read:
        """One pipeline, split by node and sent to every node at once: pointer, manifest, user, items."""
        pipe = self.cluster.pipeline()
        pipe.get(active_key(self.namespace))
        pipe.exists(manifest_key(version, self.namespace))
        pipe.get(user_key(version, user_id, self.namespace))
        for item_id in misses:
            pipe.get(item_key(version, item_id, self.namespace))
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
            raw_items=list(results[3:]),
        )

    async def _get_items(self, version: str, item_ids: list[str]) -> list[bytes | None]:
        """The item entries of `version`, one GET each, pipelined per node in parallel."""
        pipe = self.cluster.pipeline()
        for item_id in item_ids:
            pipe.get(item_key(version, item_id, self.namespace))
        try:
            raw = await pipe.execute()
        except STORE_ERRORS as exc:
            raise self._unreachable(exc) from exc
        finally:
            metrics.STORE_ROUND_TRIPS.labels(self.name).inc()
        return list(raw)

    async def _get_raw(self, keys: list[Any]) -> list[bytes | None]:
        """The values of `keys` (any slots), one GET each, pipelined per node in parallel."""
        pipe = self.cluster.pipeline()
        for key in keys:
            pipe.get(key)
        raw = await pipe.execute()
        metrics.STORE_ROUND_TRIPS.labels(self.name).inc()
        return list(raw)
