"""Which Redis store the settings pick (a cluster for BINLLM_REDIS_CLUSTER or a redis+cluster:// URL), and
how long the cluster store retries across a failover."""

from __future__ import annotations

import pytest
from redis.backoff import ExponentialBackoff

from app.main import build_store, cluster_failover_s
from app.settings import ServiceSettings
from app.store.cluster import (
    FAILOVER_BACKOFF_BASE_S,
    FAILOVER_BACKOFF_CAP_S,
    RedisClusterStore,
    retries_covering,
)
from app.store.redis import RedisStore


@pytest.mark.parametrize(
    ("url", "flag", "cluster"),
    [
        ("redis://r:6379/0", False, False),
        ("redis://r:6379", True, True),
        ("redis+cluster://r:6379", False, True),
    ],
)
def test_the_store_is_a_cluster_store_when_the_settings_say_so(url: str, flag: bool, cluster: bool) -> None:
    settings = ServiceSettings(store="redis", redis_url=url, redis_cluster=flag, backend="instant")
    store = build_store(settings)
    assert isinstance(store, RedisStore)
    assert isinstance(store, RedisClusterStore) is cluster


def test_the_cluster_store_connects_to_the_plain_url() -> None:
    store = RedisClusterStore("rediss+cluster://u:p@r:6380", namespace="ns")
    assert store._url == "rediss://u:p@r:6380" and store.namespace == "ns"


@pytest.mark.parametrize("seconds", [0.0, 0.05, 1.0, 6.0, 30.0])
def test_the_failover_retries_wait_at_least_the_failover_budget_and_no_retry_more(seconds: float) -> None:
    backoff = ExponentialBackoff(cap=FAILOVER_BACKOFF_CAP_S, base=FAILOVER_BACKOFF_BASE_S)
    retries = retries_covering(backoff, seconds)
    delays = [backoff.compute(k) for k in range(1, retries + 1)]
    assert sum(delays) >= seconds  # the retries outlast a failover of `seconds`
    assert retries == 0 or sum(delays[:-1]) < seconds  # and the last one was needed


@pytest.mark.parametrize(
    ("failover_s", "deadline_s", "expected"),
    [(6.0, 30.0, 6.0), (6.0, 4.0, 2.0), (6.0, None, 6.0), (0.0, 30.0, 0.0)],
)
def test_a_failover_is_waited_out_for_at_most_half_the_deadline(
    failover_s: float, deadline_s: float | None, expected: float
) -> None:
    settings = ServiceSettings(
        store="redis",
        redis_url="redis+cluster://r:6379",
        backend="instant",
        redis_failover_s=failover_s,
        deadline_s=deadline_s,
    )
    assert cluster_failover_s(settings) == expected
    store = build_store(settings)
    assert isinstance(store, RedisClusterStore) and store._failover_s == expected
