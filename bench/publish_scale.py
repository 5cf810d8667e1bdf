"""Catalogue-scale publishing: Redis memory per user and per item, users/s published, p99 lookup.

Builds a synthetic catalogue (users with a 32-bit code and 10 history item ids, items with a code and a
title of realistic length), publishes it with `binllm publish`'s Redis publisher into its own redis-server
(loopback, no persistence; `--own-cluster N` starts a private Redis Cluster of N primaries instead; or
`--redis URL`, a `redis+cluster://` URL for a cluster), then measures:

- bytes per user / per item: the mean `MEMORY USAGE` of sampled keys (key, value and Redis' per-key
  overhead), checked against the growth of `used_memory` over the whole publish;
- the same user stored the old way (10 titles instead of 10 ids), for comparison;
- users and items as a CoLLM snapshot stores them (each with its packed CF embedding);
- users/s: users published per second of the whole publish (write, verify, switch; items included);
- lookup latency: the service's own store (`app.store`) answering `lookup(user, 20 candidates)` one at a
  time, with the item cache off (every entry read from Redis) and at its default size (warmed).

It ends with the sizing it implies: users per 64 GB node and the primaries for 100M users, counting two
versions held during a publish and 25% headroom. The last line is machine-readable JSON.

    .venv/bin/python bench/publish_scale.py                                  # 200k users, 20k items: ~2 min
    .venv/bin/python bench/publish_scale.py --users 1000000 --items 100000   # the issue's scale
    .venv/bin/python bench/publish_scale.py --own-cluster 3                  # a private 3-primary cluster
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from app.store.redis import RedisStore
from model_store.contract.prompts import pack_embedding
from model_store.contract.snapshot import (
    ItemEntry,
    ModelManifest,
    SnapshotManifest,
    UserEntry,
    entry_json,
    item_key,
    split_cluster_url,
    user_key,
)
from model_store.publish import Snapshot
from model_store.publish.cluster import RedisClusterPublisher
from model_store.publish.redis import RedisPublisher

NODE_BYTES = 64 * 10**9
HEADROOM = 0.75  # of a node's memory for data: the rest for fragmentation, replication buffers, fork
VERSIONS_HELD = 2  # the active version and the one being published
TITLE_WORDS = ["The", "Last", "Night", "of", "a", "Summer", "Road", "Story", "Return", "City", "Love", "War"]


def synthetic_snapshot(n_users: int, n_items: int, seed: int = 0) -> Snapshot:
    """`n_users` users (10 history ids each), `n_items` items; titles ~30 characters like ML-1M's."""
    rng = random.Random(seed)
    items = {
        str(i): ItemEntry(
            code=None if rng.random() < 0.05 else rng.getrandbits(32),
            title=" ".join(rng.choices(TITLE_WORDS, k=4)) + f" {i} ({1950 + i % 70})",
        )
        for i in range(n_items)
    }
    users = {
        str(u): UserEntry(code=rng.getrandbits(32), history=[str(rng.randrange(n_items)) for _ in range(10)])
        for u in range(n_users)
    }
    model = ModelManifest(
        model_version="scale", yes_token="Yes", no_token="No", yes_token_id=1, no_token_id=2
    )
    manifest = SnapshotManifest(
        version="scale1",
        code_version="scale",
        model=model,
        n_users=n_users,
        n_items=n_items,
        created_at="2026-01-01T00:00:00+00:00",
    )
    return Snapshot(manifest=manifest, users=users, items=items)


def free_port() -> int:
    """A port the kernel just found free on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def own_redis() -> Iterator[str]:
    """A private redis-server on a free loopback port, no persistence."""
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        args = [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        proc = subprocess.Popen([*args, "--dir", workdir], stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@contextmanager
def own_cluster(primaries: int) -> Iterator[str]:
    """`primaries` cluster-enabled redis-servers joined by `redis-cli --cluster create`; yields a seed URL."""
    ports = [free_port() for _ in range(primaries)]
    procs = []
    with tempfile.TemporaryDirectory() as workdir:
        try:
            for port in ports:
                args = [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ]
                args += ["--cluster-enabled", "yes", "--cluster-port", str(free_port()), "--dir", workdir]
                args += ["--cluster-config-file", f"{workdir}/nodes-{port}.conf"]
                procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL))
            time.sleep(0.5)
            nodes = [f"127.0.0.1:{port}" for port in ports]
            create = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
            subprocess.run(create, check=True, capture_output=True, timeout=60)
            seed = redis.Redis(port=ports[0], decode_responses=True)
            while seed.cluster("info")["cluster_state"] != "ok":
                time.sleep(0.1)
            yield f"redis+cluster://127.0.0.1:{ports[0]}"
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=10)


def used_memory(client: Any, cluster: bool) -> int:
    """Bytes of `used_memory`, summed over every primary of a cluster."""
    if cluster:
        infos = client.info("memory", target_nodes=client.PRIMARIES)
        return sum(int(info["used_memory"]) for info in infos.values())
    return int(client.info("memory")["used_memory"])


def mean_key_bytes(client: Any, keys: list[str]) -> float:
    """Mean `MEMORY USAGE key SAMPLES 0` over `keys`."""
    return statistics.fmean(int(client.memory_usage(key, samples=0)) for key in keys)


def old_style_user_bytes(client: Any, snapshot: Snapshot, sample: list[str]) -> float:
    """A user stored with its 10 titles (as before item-id histories), measured under a scratch namespace."""
    keys = []
    for user_id in sample:
        user = snapshot.users[user_id]
        old = UserEntry(code=user.code, history_titles=[snapshot.items[i].title for i in user.history])
        key = user_key(snapshot.manifest.version, user_id, "oldstyle")
        client.set(key, entry_json(old))
        keys.append(key)
    try:
        return mean_key_bytes(client, keys)
    finally:
        client.delete(*keys)


def collm_entry_bytes(
    client: Any, snapshot: Snapshot, users: list[str], items: list[str]
) -> tuple[float, float]:
    """Users and items stored as for a CoLLM model (each with a packed 32-value CF embedding besides its code),
    measured under a scratch namespace: (bytes per user, bytes per item)."""
    rng = random.Random(2)

    def embedding() -> str:
        return pack_embedding([rng.uniform(-1, 1) for _ in range(32)])

    version, keys = snapshot.manifest.version, []
    for user_id in users:
        entry = snapshot.users[user_id].model_copy(update={"embedding": embedding()})
        keys.append(user_key(version, user_id, "collm"))
        client.set(keys[-1], entry_json(entry))
    n_users = len(keys)
    for item_id in items:
        item = snapshot.items[item_id].model_copy(update={"embedding": embedding()})
        keys.append(item_key(version, item_id, "collm"))
        client.set(keys[-1], entry_json(item))
    try:
        return mean_key_bytes(client, keys[:n_users]), mean_key_bytes(client, keys[n_users:])
    finally:
        client.delete(*keys)


async def lookup_seconds(
    url: str, cluster: bool, ids: tuple[list[str], list[str]], n: int, cache: int
) -> list[float]:
    """Seconds per `lookup(user, 20 candidates)` through the service's store, one lookup at a time."""
    store = store_for(url, cluster, cache)
    await store.open()
    rng = random.Random(1)
    users, items = ids
    requests = [(rng.choice(users), rng.sample(items, 20)) for _ in range(n)]
    try:
        if cache:
            for user_id, item_ids in requests:  # warm the item cache, as a serving worker is
                await store.lookup(user_id, item_ids)
        seconds = []
        for user_id, item_ids in requests:
            start = time.perf_counter()
            found = await store.lookup(user_id, item_ids)
            seconds.append(time.perf_counter() - start)
            assert found.user is not None and len(found.items) >= 20
        return seconds
    finally:
        await store.aclose()


def store_for(url: str, cluster: bool, cache: int) -> RedisStore:
    """The service's Redis store (cluster or single node) as `app.main` builds it."""
    if cluster:
        from app.store.cluster import RedisClusterStore

        return RedisClusterStore(url, item_cache_size=cache)
    return RedisStore(url, item_cache_size=cache)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Publish, measure, and return the figures."""
    plain_url, cluster_url = split_cluster_url(url)
    cluster = cluster_url or args.cluster
    build_start = time.perf_counter()
    snapshot = synthetic_snapshot(args.users, args.items)
    build_s = time.perf_counter() - build_start
    kind = RedisClusterPublisher if cluster else RedisPublisher
    publisher = kind.from_url(plain_url, namespace="binllm", batch_size=args.batch_size)
    client = publisher.client
    before = used_memory(client, cluster)
    start = time.perf_counter()
    publisher.publish(snapshot)
    publish_s = time.perf_counter() - start
    grown = used_memory(client, cluster) - before
    rng = random.Random(2)
    version = snapshot.manifest.version
    user_sample = rng.sample(list(snapshot.users), min(args.sample, args.users))
    item_sample = rng.sample(list(snapshot.items), min(args.sample, args.items))
    per_user = mean_key_bytes(client, [user_key(version, u, "binllm") for u in user_sample])
    per_item = mean_key_bytes(client, [item_key(version, i, "binllm") for i in item_sample])
    per_user_titles = old_style_user_bytes(client, snapshot, user_sample[:1000])
    collm_user, collm_item = collm_entry_bytes(client, snapshot, user_sample[:1000], item_sample[:1000])
    ids = (list(snapshot.users), list(snapshot.items))
    del snapshot  # millions of live objects would make the collector's full passes the p99
    gc.collect()
    cold = asyncio.run(lookup_seconds(plain_url, cluster, ids, args.lookups, cache=0))
    warm = asyncio.run(lookup_seconds(plain_url, cluster, ids, args.lookups, cache=100_000))
    # used_memory also grows by the key table's buckets (power-of-two sized): size by whichever is larger
    predicted = per_user * args.users + per_item * args.items
    sizing_user = per_user * max(1.0, grown / predicted)
    users_per_node = int(NODE_BYTES * HEADROOM / VERSIONS_HELD / sizing_user)
    need = 100_000_000 * sizing_user * VERSIONS_HELD / (NODE_BYTES * HEADROOM)
    return {
        "users": args.users,
        "items": args.items,
        "cluster": cluster,
        "bytes_per_user": round(per_user, 1),
        "bytes_per_user_with_titles": round(per_user_titles, 1),
        "bytes_per_item": round(per_item, 1),
        "bytes_per_user_collm": round(collm_user, 1),
        "bytes_per_item_collm": round(collm_item, 1),
        "used_memory_growth_bytes": grown,
        "predicted_growth_bytes": int(predicted),
        "sizing_bytes_per_user": round(sizing_user, 1),
        "build_seconds": round(build_s, 1),
        "publish_seconds": round(publish_s, 1),
        "users_per_second": round(args.users / publish_s),
        "lookup_p50_ms_no_cache": round(1000 * statistics.median(cold), 3),
        "lookup_p99_ms_no_cache": round(1000 * percentile(cold, 0.99), 3),
        "lookup_p50_ms_cached": round(1000 * statistics.median(warm), 3),
        "lookup_p99_ms_cached": round(1000 * percentile(warm, 0.99), 3),
        "users_per_64gb_node": users_per_node,
        "primaries_for_100m_users": max(1, int(-(-need // 1))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--users", type=int, default=200_000, help="users in the catalogue (>= 1M for sizing)"
    )
    parser.add_argument(
        "--items", type=int, default=20_000, help="items in the catalogue (>= 100k for sizing)"
    )
    parser.add_argument("--redis", default=None, help="publish here instead of a private redis-server")
    parser.add_argument("--cluster", action="store_true", help="--redis is a node of a Redis Cluster")
    parser.add_argument("--own-cluster", type=int, default=0, help="start a private cluster of N primaries")
    parser.add_argument("--batch-size", type=int, default=1000, help="writes per pipeline")
    parser.add_argument("--lookups", type=int, default=2000, help="timed lookups per cache setting")
    parser.add_argument("--sample", type=int, default=5000, help="keys sampled for MEMORY USAGE")
    args = parser.parse_args()
    if args.redis is not None:
        figures = run(args.redis, args)
    else:
        with own_cluster(args.own_cluster) if args.own_cluster else own_redis() as url:
            figures = run(url, args)
    print(
        f"catalogue: {figures['users']:,} users, {figures['items']:,} items (cluster: {figures['cluster']})"
    )
    print(
        f"bytes per user: {figures['bytes_per_user']:.0f} (history as 10 item ids; "
        f"{figures['bytes_per_user_with_titles']:.0f} with 10 titles)"
    )
    print(f"bytes per item: {figures['bytes_per_item']:.0f}")
    print(
        f"for a CoLLM model (a packed 32-value CF embedding per entry): bytes per user "
        f"{figures['bytes_per_user_collm']:.0f}, per item {figures['bytes_per_item_collm']:.0f}"
    )
    print(
        f"used_memory grew {figures['used_memory_growth_bytes'] / 1e6:.1f} MB "
        f"(per-key figures predict {figures['predicted_growth_bytes'] / 1e6:.1f} MB)"
    )
    print(
        f"published {figures['users_per_second']:,} users/s ({figures['publish_seconds']} s for the whole "
        f"snapshot, items included; building it in memory took {figures['build_seconds']} s)"
    )
    print(
        f"lookup (user + 20 candidates): p50 {figures['lookup_p50_ms_no_cache']} ms, p99 "
        f"{figures['lookup_p99_ms_no_cache']} ms with no item cache; p50 {figures['lookup_p50_ms_cached']} ms, "
        f"p99 {figures['lookup_p99_ms_cached']} ms with the default cache"
    )
    print(
        f"sizing at {figures['sizing_bytes_per_user']:.0f} bytes per user: {figures['users_per_64gb_node']:,} users "
        f"per 64 GB node ({VERSIONS_HELD} versions held, {HEADROOM:.0%} of memory for data); 100M users need "
        f"{figures['primaries_for_100m_users']} primaries by memory"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
