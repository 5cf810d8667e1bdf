"""Publisher and service against a real Redis Cluster (several `redis-server --cluster-enabled yes` joined
with `redis-cli --cluster create`): keys spread over every primary, one atomic pointer write, rollback, one
round trip per request, the publish lock, and a primary killed under load (its replica takes over) with
every answer from one whole version and the snapshot intact.

    .venv/bin/pytest -m integration tests/integration/test_redis_cluster.py
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.cluster import RedisCluster

from app.schemas import PredictResponse
from model_store.contract.snapshot import (
    ItemEntry,
    ModelManifest,
    SnapshotManifest,
    UserEntry,
    active_key,
    split_cluster_url,
    user_key,
)
from model_store.errors import PublishError
from model_store.publish import Snapshot
from model_store.publish.cluster import RedisClusterPublisher
from tests.integration.conftest import REDIS_SERVER
from tests.integration.redis_cluster import REDIS_CLI, ClusterHandle, running_cluster
from tests.integration.service_process import running_service
from tests.integration.test_publish_redis import binllm, write_inputs
from tests.integration.test_service_redis import counter

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(REDIS_SERVER is None or REDIS_CLI is None, reason="redis-server/redis-cli missing"),
]

N_USERS = 200
REQUEST = {"user_id": "u7", "item_ids": ["i1", "i2", "i3", "i4"]}


def make_snapshot(version: str, n_users: int = N_USERS, n_items: int = 60) -> Snapshot:
    """Codes and titles differ per version, so each version scores REQUEST differently."""
    salt = sum(map(ord, version))
    items = {
        f"i{k}": ItemEntry(code=(k * 7919 + salt) % 2**32, title=f"{version} film {k}")
        for k in range(n_items)
    }
    users = {
        f"u{k}": UserEntry(
            code=(k * 104729 + salt) % 2**32, history=[f"i{(k + j) % n_items}" for j in range(3)]
        )
        for k in range(n_users)
    }
    model = ModelManifest(
        model_version=f"m-{version}", yes_token="Yes", no_token="No", yes_token_id=1, no_token_id=2
    )
    manifest = SnapshotManifest(
        version=version,
        code_version="c",
        model=model,
        n_users=n_users,
        n_items=n_items,
        created_at=f"2026-01-01T00:00:00+00:00#{version}",
    )
    return Snapshot(manifest=manifest, users=users, items=items)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    with running_cluster(tmp_path_factory.mktemp("cluster"), primaries=3) as handle:
        yield handle


def publisher_for(cluster: ClusterHandle, namespace: str = "binllm") -> RedisClusterPublisher:
    return RedisClusterPublisher.from_url(
        split_cluster_url(cluster.url)[0], namespace=namespace, batch_size=50
    )


def predict(url: str, body: dict[str, Any] = REQUEST) -> PredictResponse:
    response = httpx.post(f"{url}/predict", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return PredictResponse.model_validate(response.json())


def test_cli_publishes_over_every_primary_and_rolls_back(cluster: ClusterHandle, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path)
    target = ["--redis", cluster.url, "--namespace", "cli"]
    for version in ("v1", "v2"):
        child = binllm("publish", *inputs, *target, "--version", version)
        assert child.wait(timeout=120) == 0, child.stderr.read().decode() if child.stderr else ""
    publisher = publisher_for(cluster, "cli")
    assert publisher.active_version() == "v2" and publisher.versions() == ["v2", "v1"]
    sizes = [cluster.node(port).dbsize() for port in cluster.primaries()]
    assert len(sizes) == 3 and min(sizes) > 100  # user and item keys spread over all three primaries
    back = binllm("publish", "rollback", *target)
    assert back.wait(timeout=60) == 0 and back.stdout is not None
    assert back.stdout.read().decode().strip() == "rolled back: active version is now v1"
    assert publisher.active_version() == "v1"


def test_the_publish_lock_holds_across_the_cluster(cluster: ClusterHandle) -> None:
    first, second = publisher_for(cluster, "lock"), publisher_for(cluster, "lock")
    with first.lock, pytest.raises(PublishError, match="another publisher holds lock:publish-lock"):
        second.publish(make_snapshot("v1"))
    assert second.publish(make_snapshot("v1")) == "v1"


def test_service_serves_publishes_and_rollbacks_in_one_round_trip(cluster: ClusterHandle) -> None:
    publisher = publisher_for(cluster)
    publisher.publish(make_snapshot("s1"))
    with running_service(cluster.url) as url:
        first = predict(url)
        assert first.model_version == "m-s1"
        before = counter(url, "binllm_store_round_trips_total", store="redis")
        again = predict(url)  # user's history items cached by the first request
        assert counter(url, "binllm_store_round_trips_total", store="redis") - before == 1
        assert again == first
        publisher.publish(make_snapshot("s2"))
        second = predict(url)
        assert second.model_version == "m-s2" and second.scores != first.scores
        publisher.rollback()
        assert predict(url) == first


def expected_answers(url: str, publisher: RedisClusterPublisher, versions: list[str]) -> dict[str, Any]:
    """The whole answer to REQUEST under each version (made active in turn)."""
    answers = {}
    for version in versions:
        publisher.rollback(to=version)
        answer = predict(url)
        answers[answer.model_version] = answer.scores
    return answers


def test_a_primary_fails_over_under_load_unseen_by_clients_with_no_mixed_versions(tmp_path: Path) -> None:
    with running_cluster(tmp_path / "ha", primaries=3, replicas=1) as cluster:
        publisher = publisher_for(cluster)
        for version in ("a", "b"):
            publisher.publish(make_snapshot(version))
        with running_service(cluster.url) as url:  # the default failover retries, nothing tuned
            answers = expected_answers(url, publisher, ["a", "b"])
            assert len(answers) == 2
            stop = threading.Event()
            outcomes: Counter[str] = Counter()
            served: Counter[str] = Counter()
            mixed: list[str] = []

            def load() -> None:
                with httpx.Client(timeout=10) as client:
                    while not stop.is_set():
                        response = client.post(f"{url}/predict", json=REQUEST)
                        outcomes[str(response.status_code)] += 1
                        if response.status_code == 200:
                            body = PredictResponse.model_validate(response.json())
                            served[body.model_version] += 1
                            if body.scores != answers[body.model_version]:
                                mixed.append(body.model_version)

            def flip() -> None:  # the pointer moves under the load the whole time
                target = "a"
                while not stop.is_set():
                    try:
                        publisher.rollback(to=target)
                        target = "b" if target == "a" else "a"
                    except PublishError:
                        pass  # the pointer's own primary may be the one failing over
                    time.sleep(0.05)

            threads = [threading.Thread(target=load) for _ in range(2)] + [threading.Thread(target=flip)]
            for thread in threads:
                thread.start()
            try:
                time.sleep(1.0)
                victim = cluster_node_of(publisher, active_key())  # the primary holding the version pointer
                replica = cluster.replica_of(victim)
                cluster.kill(victim)
                cluster.wait_promoted(replica, timeout_s=30)
                cluster.wait_ok(timeout_s=30)
                time.sleep(1.0)
                settled = outcomes["200"]
                time.sleep(1.0)
                assert outcomes["200"] > settled  # served again after the failover
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=30)
            print(f"answers while a primary failed over: {dict(outcomes)}")  # shown with -s
            assert mixed == []
            assert set(outcomes) == {"200"}, outcomes  # the failover is retried through: no 503, no 500
            assert outcomes["200"] > 20 and set(served) == {"m-a", "m-b"}  # both versions, never mixed
            live = RedisCluster.from_url(split_cluster_url(cluster.url.replace(str(victim), str(replica)))[0])
            active = publisher_for_live(live).active_version()
            assert active in {"a", "b"}
            assert all(live.exists(user_key(active, f"u{k}")) for k in range(N_USERS))  # no snapshot lost
            after = predict(url)
            assert after.scores == answers[after.model_version]


def publisher_for_live(client: RedisCluster) -> RedisClusterPublisher:
    return RedisClusterPublisher(client)  # type: ignore[arg-type]


def cluster_node_of(publisher: RedisClusterPublisher, key: str) -> int:
    """The port of the primary that owns `key`'s slot, from the client's slot table."""
    return int(publisher.client.get_node_from_key(key).port)
