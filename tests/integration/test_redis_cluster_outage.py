"""A whole Redis Cluster out of reach, and seed URLs with several nodes (real cluster, real uvicorn).

Before the fix: with every node down, requests got 500 `internal_error` or a dropped connection and `/readyz`
answered 500 (redis-py's `RedisClusterException` is not a `RedisError`); a dead seed node made start-up fail;
`redis+cluster://h1:p1,h2:p2` failed with "Port could not be cast". Now the service starts whatever the store
does, answers 503 `store_unavailable` with Retry-After while the cluster is out of reach, and serves as soon
as it is back.

    .venv/bin/pytest -m integration tests/integration/test_redis_cluster_outage.py -s
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from app.schemas import ErrorResponse
from model_store.contract.snapshot import split_cluster_url
from model_store.publish.cluster import RedisClusterPublisher
from tests.integration.chaos import report
from tests.integration.conftest import REDIS_SERVER, free_port
from tests.integration.redis_cluster import REDIS_CLI, running_cluster
from tests.integration.service_process import running_service, wait_ready
from tests.integration.test_redis_cluster import REQUEST, make_snapshot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(REDIS_SERVER is None or REDIS_CLI is None, reason="redis-server/redis-cli missing"),
]

CLUSTER_ENV = {"BINLLM_REDIS_TIMEOUT_S": "0.5", "BINLLM_READINESS_TIMEOUT_S": "2"}


def seed_url(ports: list[int]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in ports)


def burst(url: str, n: int = 30) -> tuple[Counter[str], set[str]]:
    """n concurrent /predict: counts by 'status type' (or the transport error), and the Retry-After values."""

    async def run() -> list[httpx.Response | BaseException]:
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:
            return await asyncio.gather(
                *(client.post("/predict", json=REQUEST) for _ in range(n)), return_exceptions=True
            )

    counts: Counter[str] = Counter()
    retry_after: set[str] = set()
    for response in asyncio.run(run()):
        if isinstance(response, BaseException):
            counts[type(response).__name__] += 1
        elif response.status_code == 200:
            counts["200"] += 1
        else:
            counts[f"{response.status_code} {ErrorResponse.model_validate(response.json()).error.type}"] += 1
            retry_after.add(response.headers.get("retry-after", "none"))
    return counts, retry_after


def test_several_seed_nodes_are_accepted_and_a_dead_first_one_is_skipped(tmp_path: Path) -> None:
    with running_cluster(tmp_path, primaries=3) as cluster:
        RedisClusterPublisher.from_url(split_cluster_url(cluster.url)[0]).publish(make_snapshot("v1"))
        url = seed_url([free_port(), cluster.ports[1]])  # the first seed is dead, the cluster is healthy
        with running_service(url, **CLUSTER_ENV) as service:
            ready = httpx.get(f"{service}/readyz", timeout=10)
            answer = httpx.post(f"{service}/predict", json=REQUEST, timeout=10)
    assert ready.status_code == 200 and answer.status_code == 200, (ready.text, answer.text)


def test_the_service_starts_while_the_cluster_is_down_and_serves_once_it_is_up(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    with running_service(seed_url(ports), **CLUSTER_ENV) as service:
        ready = httpx.get(f"{service}/readyz", timeout=10)
        down, retry_after = burst(service)
        report(f"cluster never started: /readyz {ready.status_code}; burst {dict(down)}")
        assert ready.status_code == 503 and ready.json()["error"]["type"] == "not_ready"
        assert down == Counter({"503 store_unavailable": 30}) and retry_after == {"1"}
        with running_cluster(tmp_path, primaries=3, ports=ports) as cluster:
            RedisClusterPublisher.from_url(split_cluster_url(cluster.url)[0]).publish(make_snapshot("v1"))
            seconds = wait_ready(service)
            up, _ = burst(service)
    report(f"cluster started later: ready {seconds:.1f} s after the publish; burst {dict(up)}")
    assert up == Counter({"200": 30})


def test_every_node_killed_gives_503_store_unavailable_and_readyz_503(tmp_path: Path) -> None:
    with running_cluster(tmp_path, primaries=3) as cluster:
        RedisClusterPublisher.from_url(split_cluster_url(cluster.url)[0]).publish(make_snapshot("v1"))
        with running_service(cluster.url, **CLUSTER_ENV) as service:
            before, _ = burst(service)
            for port in cluster.ports:
                cluster.kill(port)
            down, retry_after = burst(service)
            ready = httpx.get(f"{service}/readyz", timeout=10)
            again, _ = burst(service)
    report(
        f"every cluster node killed: before {dict(before)}; after {dict(down)}, then {dict(again)}; /readyz {ready.status_code}"
    )
    assert before == Counter({"200": 30})
    assert down == again == Counter({"503 store_unavailable": 30}) and retry_after == {"1"}
    assert ready.status_code == 503 and ready.json()["error"]["type"] == "not_ready"
