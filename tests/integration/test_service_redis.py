"""The service end to end: uvicorn in a subprocess, real HTTP, a real redis-server, backend=instant.

Covers scores in order, cold users/items, 404/422 envelopes, exactly one Redis round trip per request
(the service's own round-trip counter and Redis' INFO commandstats agree), the item cache, a publish seen
by the next request, readiness states, and Prometheus counts summed over two uvicorn workers.

    .venv/bin/pytest -m integration tests/integration/test_service_redis.py
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from app.schemas import ErrorResponse, PredictResponse, ReadyResponse
from model_store.contract.snapshot import ItemEntry, ModelManifest, SnapshotManifest, UserEntry
from model_store.publish import Snapshot
from model_store.publish.redis import RedisPublisher
from tests.integration.service_process import running_service

pytestmark = pytest.mark.integration


def make_snapshot(version: str, model_version: str = "m1") -> Snapshot:
    users = {
        "u1": UserEntry(code=7, history_titles=["Heat (1995)"]),  # as published before item-id histories
        "u2": UserEntry(code=None),
        "u3": UserEntry(code=9, history=["x28", "x29"]),
    }
    items = {
        "i1": ItemEntry(code=1, title="Toy Story (1995)"),
        "i2": ItemEntry(code=2, title="Jumanji (1995)"),
        "i3": ItemEntry(code=None, title="Brand New (2024)"),
        **{f"x{k}": ItemEntry(code=k, title=f"Film {k}") for k in range(10, 30)},
    }
    model = ModelManifest(
        model_version=model_version, yes_token="Yes", no_token="No", yes_token_id=1, no_token_id=2
    )
    manifest = SnapshotManifest(
        version=version,
        code_version="c1",
        model=model,
        n_users=len(users),
        n_items=len(items),
        created_at=f"2025-01-01T00:00:0{version[-1]}+00:00",
    )
    return Snapshot(manifest=manifest, users=users, items=items)


@pytest.fixture(scope="module")
def published(redis_server: str) -> str:
    RedisPublisher.from_url(redis_server).publish(make_snapshot("v1"))
    return redis_server


@pytest.fixture(scope="module")
def service(published: str) -> Iterator[str]:
    with running_service(published) as url:
        yield url


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/predict", json=body, timeout=10)


def counter(url: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples with these labels, read from /metrics."""
    text = httpx.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_scores_come_back_in_request_order_with_cold_items_listed(service: str) -> None:
    response = post(service, {"user_id": "u1", "item_ids": ["i3", "i2", "i1"]})
    assert response.status_code == 200
    body = PredictResponse.model_validate(response.json())
    assert [s.item_id for s in body.scores] == ["i3", "i2", "i1"]
    assert body.cold == ["i3"] and (body.model_version, body.code_version) == ("m1", "c1")


def test_unknown_and_codeless_users_are_scored_cold(service: str) -> None:
    for user in ("u2", "never-seen"):
        body = PredictResponse.model_validate(
            post(service, {"user_id": user, "item_ids": ["i1", "i2"]}).json()
        )
        assert body.cold == ["i1", "i2"]


def test_unknown_items_get_404_naming_them(service: str) -> None:
    response = post(service, {"user_id": "u1", "item_ids": ["i1", "ghost"]})
    error = ErrorResponse.model_validate(response.json()).error
    assert response.status_code == 404 and "'ghost'" in error.message and "'i1'" not in error.message


def test_malformed_body_gets_422_naming_the_field(service: str) -> None:
    response = post(service, {"user_id": "u1", "item_ids": [1.5]})
    error = ErrorResponse.model_validate(response.json()).error
    assert response.status_code == 422 and error.param == "item_ids[0]"


def test_each_request_is_one_redis_round_trip_and_cached_items_skip_mget(
    service: str, published: str
) -> None:
    client = redis.Redis.from_url(published)
    before = counter(service, "binllm_store_round_trips_total", store="redis")
    client.config_resetstat()
    body = {"user_id": "u1", "item_ids": ["x10", "x11", "x12"]}
    assert post(service, body).status_code == 200  # items not cached yet: GET active, GET user, MGET
    first = client.info("commandstats")
    assert post(service, body).status_code == 200  # all cached: GET active, GET user
    second = client.info("commandstats")
    assert counter(service, "binllm_store_round_trips_total", store="redis") - before == 2
    assert first["cmdstat_get"]["calls"] == 2 and first["cmdstat_mget"]["calls"] == 1
    assert second["cmdstat_get"]["calls"] == 4 and second["cmdstat_mget"]["calls"] == 1
    assert counter(service, "binllm_item_cache_hits_total") >= 3


def test_a_stored_history_of_item_ids_is_prompted_with_their_titles(service: str) -> None:
    def scores(body: dict[str, Any]) -> list[float]:
        response = post(service, body)
        assert response.status_code == 200, response.text
        return [s.score for s in PredictResponse.model_validate(response.json()).scores]

    before = counter(service, "binllm_store_round_trips_total", store="redis")
    stored = scores({"user_id": "u3", "item_ids": ["i1", "i2"]})  # x28, x29 not cached: one more MGET
    middle = counter(service, "binllm_store_round_trips_total", store="redis")
    assert scores({"user_id": "u3", "item_ids": ["i1", "i2"]}) == stored  # now cached: one round trip
    after = counter(service, "binllm_store_round_trips_total", store="redis")
    assert (middle - before, after - middle) == (2, 1)
    explicit = {"user_id": "u3", "item_ids": ["i1", "i2"], "history_item_ids": ["x28", "x29"]}
    assert scores(explicit) == stored  # the same prompts: the titles of x28 and x29
    assert scores({**explicit, "history_item_ids": ["x27"]}) != stored


def test_a_publish_is_served_by_the_next_request(service: str, published: str) -> None:
    publisher = RedisPublisher.from_url(published)
    publisher.publish(make_snapshot("v2", model_version="m2"))
    body = PredictResponse.model_validate(post(service, {"user_id": "u1", "item_ids": ["i1"]}).json())
    assert body.model_version == "m2"
    ready = ReadyResponse.model_validate(httpx.get(f"{service}/readyz").json())
    assert ready.snapshot_version == "v2"


def test_readyz_follows_redis_and_the_active_snapshot(redis_server_factory: Callable[[], Any]) -> None:
    private = redis_server_factory()
    with running_service(private.url) as url:
        not_yet = httpx.get(f"{url}/readyz")
        assert not_yet.status_code == 503 and "no active snapshot" in not_yet.json()["error"]["message"]
        RedisPublisher.from_url(private.url).publish(make_snapshot("v1"))
        assert httpx.get(f"{url}/readyz").status_code == 200
        private.stop()
        down = httpx.get(f"{url}/readyz")
        assert down.status_code == 503 and "redis unreachable" in down.json()["error"]["message"]
        failed = post(url, {"user_id": "u1", "item_ids": ["i1"]})
        assert failed.status_code == 503 and failed.headers["retry-after"] == "1"
        assert ErrorResponse.model_validate(failed.json()).error.type == "store_unavailable"


def test_metrics_sum_requests_over_two_workers(published: str, tmp_path: Path) -> None:
    n = 30
    with running_service(published, workers=2, PROMETHEUS_MULTIPROC_DIR=str(tmp_path)) as url:
        for k in range(n):  # a new connection each time, so the kernel spreads them over both workers
            response = httpx.post(
                f"{url}/predict",
                json={"user_id": "u1", "item_ids": [f"x{10 + k % 20}"]},
                headers={"Connection": "close"},
            )
            assert response.status_code == 200
        counts = [
            counter(url, "binllm_request_duration_seconds_count", route="/predict", status="200")
            for _ in range(6)  # scrapes land on either worker; each must report the sum over both
        ]
    assert counts == [n] * 6
    assert len({p.name.split("_")[-1] for p in tmp_path.glob("*.db")}) >= 2  # files of two worker pids
