"""Which Redis store the settings pick: a cluster for BINLLM_REDIS_CLUSTER or a redis+cluster:// URL."""

from __future__ import annotations

import pytest

from app.main import build_store
from app.settings import ServiceSettings
from app.store.cluster import RedisClusterStore
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
