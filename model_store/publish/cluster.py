"""Publish snapshots to a Redis Cluster: the same versions and checks as `redis.py`, keys spread over slots.

User, item and manifest keys hash to slots all over the cluster; each batch goes to every node as one plain
pipeline of MSETs, one per slot (a node answering MOVED gets its share again through redis-py's cluster
pipeline, which follows redirections), SCAN runs on every primary, and UNLINK is split by slot. What changes is
the switch. `{ns}:active` and `{ns}:versions` hash to different slots, so they cannot share a MULTI/EXEC: the
new version is first pushed onto the list, then the pointer is set in one write of one key, which is the switch
readers see. A crash between the two leaves a complete, verified version listed but never active; the
pointer, and so every reader, never moves to anything unverified. Rollback reads the list and the pointer and
sets the pointer under the publish lock (`lock.py`), which takes the place of single-node Redis's WATCH.
Before the switch the publisher waits for each primary's replicas to reach its replication offset (`INFO
replication`), so a primary failing over right after a publish loses none of it.

    binllm publish --codes artifacts/codes --data artifacts/data/ml1m --model artifacts/model \
        --redis redis+cluster://localhost:7000
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from model_store.contract.snapshot import (
    DEFAULT_NAMESPACE,
    active_key,
    cluster_seed_nodes,
    versions_key,
)
from model_store.errors import PublishError
from model_store.publish.lock import DEFAULT_LOCK_TIMEOUT_S, DEFAULT_LOCK_WAIT_S
from model_store.publish.redis import (
    DEFAULT_BATCH_SIZE,
    RedisPublisher,
    redact_url,
)
from model_store.publish.snapshot import Snapshot

logger = logging.getLogger(__name__)

REPLICA_ACK_TIMEOUT_S = 5.0


class RedisClusterPublisher(RedisPublisher):
    """Snapshot versions in one namespace of a Redis Cluster, switched by one write of `{ns}:active`."""

    client: RedisCluster  # type: ignore[assignment]

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
    ) -> RedisClusterPublisher:
        """Connect to any live seed node of `url` (one or several, `redis://h1:p1,h2:p2`; the client discovers
        the rest) and ping every primary."""
        try:
            first, seeds = cluster_seed_nodes(url)
            others = [ClusterNode(host, port) for host, port in seeds[1:]]
            client = RedisCluster.from_url(
                first, startup_nodes=others, socket_connect_timeout=5, socket_timeout=30
            )
            client.ping(target_nodes=RedisCluster.PRIMARIES)
        except (redis.RedisError, RedisClusterException, ValueError) as exc:
            raise PublishError(f"Redis Cluster unreachable at {redact_url(url)}: {exc}") from exc
        return cls(
            client,  # type: ignore[arg-type]
            namespace=namespace,
            batch_size=batch_size,
            pause_s=pause_s,
            lock_timeout_s=lock_timeout_s,
            lock_wait_s=lock_wait_s,
        )

    def _write_batch(self, batch: dict[str, str]) -> None:
        """Per node, one plain pipeline of MSETs, one per slot (a cluster MSET stays within a slot).

        A node that answers MOVED/ASK (slots migrating) gets its share again through redis-py's cluster
        pipeline, which follows redirections.
        """
        by_node: dict[str, tuple[Any, dict[int, dict[str, str]]]] = {}
        for key, value in batch.items():
            slot = self.client.keyslot(key)
            node = self.client.nodes_manager.get_node_from_slot(slot)
            by_node.setdefault(node.name, (node, {}))[1].setdefault(slot, {})[key] = value
        for node, slots in by_node.values():
            try:
                pipe = node.redis_connection.pipeline(transaction=False)
                for entries in slots.values():
                    pipe.mset(entries)
                pipe.execute()
            except redis.ResponseError:
                self.client.nodes_manager.initialize()
                cluster_pipe = self.client.pipeline(transaction=False)
                for entries in slots.values():
                    for key, value in entries.items():
                        cluster_pipe.set(key, value)
                cluster_pipe.execute()

    def _verify(self, snapshot: Snapshot) -> None:
        super()._verify(snapshot)
        self._wait_for_replicas()

    def _wait_for_replicas(self) -> None:
        """Each primary's replicas reach the primary's replication offset as it is after the writes."""
        deadline = time.monotonic() + REPLICA_ACK_TIMEOUT_S
        for node in self.client.get_primaries():
            connection = node.redis_connection
            if connection is None:
                continue
            target = int(connection.info("replication")["master_repl_offset"])
            while True:
                info = connection.info("replication")
                behind = [v for k, v in info.items() if k.startswith("slave") and int(v["offset"]) < target]
                if not behind:
                    break
                if time.monotonic() > deadline:
                    logger.warning(
                        "primary %s: %d replicas still behind the snapshot", node.name, len(behind)
                    )
                    break
                time.sleep(0.01)

    def _switch_to_new(self, version: str) -> None:
        """List the version, then set the pointer: the one write of one key that readers see."""
        pipe = self.client.pipeline(transaction=False)
        pipe.lrem(versions_key(self.ns), 0, version)
        pipe.lpush(versions_key(self.ns), version)
        pipe.execute()
        self.client.set(active_key(self.ns), version)
        logger.info("active snapshot in cluster namespace %s is now %s", self.ns, version)

    def _rollback_locked(self, to: str | None) -> str:
        """Verify the target (listed, complete) and set the pointer; the publish lock keeps other publishers
        out meanwhile."""
        target = self._rollback_target(to)
        self.lock.renew(force=True)
        self.client.set(active_key(self.ns), target)
        return target
