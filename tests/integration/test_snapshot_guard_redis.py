"""Bad versions in Redis: the store keeps serving the last version it verified, and rollback checks what it
switches to (a real redis-server; the store in-process, the service through real uvicorn).

Before the fix: `{ns}:active` set to a missing version or to a garbage manifest gave 200 of 200 503
`snapshot_missing`; a version whose codes were wider than the manifest's bits, or negative, was served and
failed requests with 500; `binllm publish rollback --to V` with half of V's item keys gone exited 0 and 239 of
300 requests got 404; a rollback to a version without a manifest was refused with that version listed as
available; with the pointer deleted `/readyz` said 503 while `/predict` served the loaded version.

    .venv/bin/pytest -m integration tests/integration/test_snapshot_guard_redis.py -s
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import REGISTRY

from app.errors import BinllmError
from app.store.redis import RedisStore
from model_store.contract.snapshot import (
    ItemEntry,
    UserEntry,
    active_key,
    item_key,
    manifest_key,
    user_key,
)
from model_store.errors import PublishError
from model_store.publish.redis import RedisPublisher
from tests.integration.chaos import report
from tests.integration.service_process import running_service
from tests.integration.test_publish_redis import make_snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_server: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server)
    yield connection
    connection.close()


def rejected(reason: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "binllm_snapshot_rejected_total", {"store": "redis", "file": FILES[reason], "reason": reason}
        )
        or 0.0
    )


FILES = {
    "missing": "manifest",
    "manifest": "manifest",
    "code_width": "items",
    "code_sign": "users",
    "count": "items",
    "encoding": "items",
}


def set_item_code(client: redis.Redis, ns: str, version: str, item_id: str, code: int) -> None:
    key = item_key(version, item_id, ns)
    client.set(
        key,
        ItemEntry.model_validate_json(client.get(key) or "")
        .model_copy(update={"code": code})
        .model_dump_json(),
    )


def corrupt_widths(client: redis.Redis, ns: str, version: str) -> None:
    set_item_code(client, ns, version, "3", 3 << 40)


def corrupt_sign(client: redis.Redis, ns: str, version: str) -> None:
    key = user_key(version, "2", ns)
    client.set(key, UserEntry(code=-2).model_dump_json())


def corrupt_count(client: redis.Redis, ns: str, version: str) -> None:
    client.delete(item_key(version, "4", ns), item_key(version, "5", ns))


def corrupt_encoding(client: redis.Redis, ns: str, version: str) -> None:
    client.set(item_key(version, "6", ns), b'{"title": "caf\xe9"}')


def corrupt_manifest(client: redis.Redis, ns: str, version: str) -> None:
    client.set(manifest_key(version, ns), "{not json")


def point_at_missing(client: redis.Redis, ns: str, version: str) -> None:
    client.set(active_key(ns), "v-none")


CASES: dict[str, Callable[[redis.Redis, str, str], None]] = {
    "code_width": corrupt_widths,
    "code_sign": corrupt_sign,
    "count": corrupt_count,
    "encoding": corrupt_encoding,
    "manifest": corrupt_manifest,
    "missing": point_at_missing,
}


@pytest.mark.parametrize("reason", list(CASES))
def test_a_bad_active_version_is_refused_and_the_last_verified_one_keeps_serving(
    redis_server: str, client: redis.Redis, reason: str
) -> None:
    ns = f"guard-{reason}"
    publisher = RedisPublisher.from_url(redis_server, namespace=ns)
    publisher.publish(make_snapshot("v1"))

    async def run() -> tuple[Counter[str], list[str]]:
        store = RedisStore(redis_server, namespace=ns, item_cache_size=0)
        await store.open()
        try:
            assert (await store.lookup("1", ["1"])).manifest.version == "v1"
            publisher.publish(make_snapshot("v2"))
            CASES[reason](client, ns, "v2")
            outcomes: Counter[str] = Counter()
            for k in range(40):
                try:
                    found = await store.lookup(str(k % 5), [str(1 + k % 6), "6"])
                    outcomes[found.manifest.version] += 1
                except BinllmError as exc:
                    outcomes[type(exc).__name__] += 1
            return outcomes, await store.not_ready_reasons()
        finally:
            await store.aclose()

    before = rejected(reason)
    outcomes, reasons = asyncio.run(run())
    report(f"redis store, active version bad ({reason}): {dict(outcomes)}; /readyz reasons {reasons}")
    assert outcomes == Counter({"v1": 40}) and reasons == []
    assert rejected(reason) == before + 1  # refused once, remembered


def test_the_service_serves_the_last_verified_version_and_readyz_agrees(
    redis_server: str, client: redis.Redis
) -> None:
    ns = "guard-service"
    publisher = RedisPublisher.from_url(redis_server, namespace=ns)
    publisher.publish(make_snapshot("v1"))
    body: dict[str, Any] = {"user_id": "1", "item_ids": ["1", "2"]}
    with running_service(redis_server, BINLLM_REDIS_NAMESPACE=ns) as url:
        assert httpx.post(f"{url}/predict", json=body, timeout=10).status_code == 200
        publisher.publish(make_snapshot("v2"))
        corrupt_sign(client, ns, "v2")
        statuses = Counter(httpx.post(f"{url}/predict", json=body, timeout=10).status_code for _ in range(30))
        ready = httpx.get(f"{url}/readyz", timeout=10)
        client.delete(active_key(ns))  # the pointer deleted: still serving v1, and /readyz says so
        gone = Counter(httpx.post(f"{url}/predict", json=body, timeout=10).status_code for _ in range(10))
        ready_gone = httpx.get(f"{url}/readyz", timeout=10)
    report(
        f"service, v2 with a negative code: {dict(statuses)}, /readyz {ready.status_code}; pointer deleted: {dict(gone)}, /readyz {ready_gone.status_code}"
    )
    assert (
        statuses == Counter({200: 30})
        and ready.status_code == 200
        and ready.json()["snapshot_version"] == "v1"
    )
    assert gone == Counter({200: 10}) and ready_gone.status_code == 200


def test_rollback_to_a_version_that_lost_keys_is_refused_and_the_pointer_stays(
    redis_server: str, client: redis.Redis
) -> None:
    ns = "guard-rollback"
    publisher = RedisPublisher.from_url(redis_server, namespace=ns)
    publisher.publish(make_snapshot("v1"))
    publisher.publish(make_snapshot("v2"))
    half = [item_key("v1", str(i), ns) for i in range(0, 7, 2)]
    client.delete(*half)
    with pytest.raises(PublishError, match=r"'v1'.*3 items, the manifest says 7"):
        publisher.rollback(to="v1")
    assert publisher.active_version() == "v2"


def test_rollback_to_a_version_without_a_manifest_does_not_list_it_as_available(
    redis_server: str, client: redis.Redis
) -> None:
    ns = "guard-nomanifest"
    publisher = RedisPublisher.from_url(redis_server, namespace=ns)
    for version in ("v1", "v2", "v3"):
        publisher.publish(make_snapshot(version))
    client.delete(manifest_key("v1", ns))
    with pytest.raises(PublishError) as refused:
        publisher.rollback(to="v1")
    message = str(refused.value)
    assert "no manifest" in message and message.endswith("versions that can be rolled back to: v3, v2")
    assert publisher.active_version() == "v3"


def test_past_the_verify_bound_a_bad_entry_is_refused_as_read_then_the_last_verified_version_serves(
    redis_server: str, client: redis.Redis
) -> None:
    """With more keys than `verify_max_keys` a new version is not read whole at load: its first bad entry
    read refuses it (one 503 snapshot_missing, never a 500), and the version verified before serves again."""
    ns = "guard-large"
    publisher = RedisPublisher.from_url(redis_server, namespace=ns)
    publisher.publish(make_snapshot("v1"))

    async def run() -> list[str]:
        store = RedisStore(redis_server, namespace=ns, item_cache_size=0, verify_max_keys=1)
        await store.open()
        try:
            publisher.publish(make_snapshot("v2"))
            corrupt_sign(client, ns, "v2")
            seen = []
            for user in ("1", "2", "1", "2"):
                try:
                    seen.append((await store.lookup(user, ["1"])).manifest.version)
                except BinllmError as exc:
                    seen.append(f"{exc.status_code} {exc.type}")
            return seen
        finally:
            await store.aclose()

    before = rejected("code_sign")
    assert asyncio.run(run()) == ["v2", "503 snapshot_missing", "v1", "v1"]
    assert rejected("code_sign") == before + 1
