"""Versions never mix: the active pointer flips in a tight loop while requests run, and every answer is
computed from exactly the version it reports (a real redis-server; the store alone, then real uvicorn).

Before the fix `RedisStore.lookup` gave up after two reads against a moving pointer and returned the newer
manifest with entries read under the older version.

    .venv/bin/pytest -m integration tests/integration/test_version_flapping.py -s
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis

from app.schemas import PredictResponse
from app.store.redis import RedisStore
from model_store.contract.snapshot import (
    ItemEntry,
    ModelManifest,
    SnapshotManifest,
    UserEntry,
    active_key,
)
from model_store.publish import Snapshot
from model_store.publish.redis import RedisPublisher
from tests.integration.chaos import report
from tests.integration.service_process import running_service

pytestmark = pytest.mark.integration

N_USERS, N_ITEMS = 8, 40
OFFSET = {
    "vA": 0,
    "vB": 1000,
    "vC": 2000,
}  # every code of vB differs from vA's, so an entry names its version


def version_snapshot(version: str) -> Snapshot:
    off = OFFSET[version]
    users = {f"u{k}": UserEntry(code=off + k, history_titles=["Heat (1995)"]) for k in range(N_USERS)}
    items = {f"x{k}": ItemEntry(code=off + 100 + k, title=f"Film {k}") for k in range(N_ITEMS)}
    model = ModelManifest(
        model_version=f"m-{version}", yes_token="Yes", no_token="No", yes_token_id=1, no_token_id=2
    )
    manifest = SnapshotManifest(
        version=version,
        code_version=f"c-{version}",
        model=model,
        n_users=len(users),
        n_items=len(items),
        created_at="2025-01-01T00:00:00+00:00",
    )
    return Snapshot(manifest=manifest, users=users, items=items)


@pytest.fixture(scope="module")
def two_versions(redis_server: str) -> str:
    publisher = RedisPublisher.from_url(redis_server)
    publisher.publish(version_snapshot("vA"))
    publisher.publish(version_snapshot("vB"))
    return redis_server


@contextmanager
def flapping_pointer(url: str) -> Iterator[list[int]]:
    """A thread sets the active pointer vA, vB, vA... as fast as it can; yields [switch count]."""
    client = redis.Redis.from_url(url)
    stop = threading.Event()
    switches = [0]

    def flap() -> None:
        while not stop.is_set():
            client.set(active_key(), "vA" if switches[0] % 2 else "vB")
            switches[0] += 1

    thread = threading.Thread(target=flap, daemon=True)
    thread.start()
    try:
        yield switches
    finally:
        stop.set()
        thread.join(timeout=5)
        client.set(active_key(), "vB")


def entry_version(code: int | None) -> str:
    assert code is not None
    return "vC" if code >= 2000 else "vB" if code >= 1000 else "vA"


async def flapping_lookups(url: str, tasks: int, per_task: int) -> tuple[int, int]:
    store = RedisStore(url, item_cache_size=16)
    await store.open()
    mixed = 0

    async def worker(k: int) -> None:
        nonlocal mixed
        for j in range(per_task):
            items = [f"x{(k + j + m) % N_ITEMS}" for m in range(5)]
            lookup = await store.lookup(f"u{k % N_USERS}", items)
            assert lookup.user is not None and len(lookup.items) == 5
            seen = {entry_version(lookup.user.code)} | {entry_version(e.code) for e in lookup.items.values()}
            if seen != {lookup.manifest.version}:
                mixed += 1

    try:
        await asyncio.gather(*(worker(k) for k in range(tasks)))
    finally:
        await store.aclose()
    return mixed, tasks * per_task


def test_store_lookups_under_a_flapping_pointer_never_mix_versions(two_versions: str) -> None:
    with flapping_pointer(two_versions) as switches:
        start = time.perf_counter()
        mixed, total = asyncio.run(flapping_lookups(two_versions, tasks=40, per_task=60))
        seconds = time.perf_counter() - start
    report(f"store: {total} lookups, {switches[0]} switches ({switches[0] / seconds:.0f}/s), {mixed} mixed")
    assert switches[0] > 100
    assert mixed == 0


BODIES = [
    {"user_id": f"u{k % N_USERS}", "item_ids": [f"x{k % N_ITEMS}", f"x{(k + 7) % N_ITEMS}"]}
    for k in range(24)
]


def expected_scores(url: str, redis_url: str, versions: list[str]) -> dict[tuple[str, int], list[float]]:
    """Each body's scores under each version, with the pointer held still."""
    expected: dict[tuple[str, int], list[float]] = {}
    for version in versions:
        redis.Redis.from_url(redis_url).set(active_key(), version)
        for n, body in enumerate(BODIES):
            answer = PredictResponse.model_validate(httpx.post(f"{url}/predict", json=body).json())
            assert answer.model_version == f"m-{version}"
            expected[(version, n)] = [s.score for s in answer.scores]
    return expected


def hammer(url: str, expected: dict[tuple[str, int], list[float]], rounds: int = 30) -> tuple[int, int, int]:
    """Rounds of concurrent requests; (mixed answers, non-200s, total)."""

    async def run() -> tuple[int, int, int]:
        mixed = failed = 0
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:

            async def one(n: int) -> None:
                nonlocal mixed, failed
                response = await client.post("/predict", json=BODIES[n])
                if response.status_code != 200:
                    failed += 1
                    return
                answer = PredictResponse.model_validate(response.json())
                version = answer.model_version.removeprefix("m-")
                scores = [s.score for s in answer.scores]
                if answer.code_version != f"c-{version}" or scores != expected[(version, n)]:
                    mixed += 1

            for _round in range(rounds):
                await asyncio.gather(*(one(n) for n in range(len(BODIES))))
        return mixed, failed, rounds * len(BODIES)

    return asyncio.run(run())


def test_service_answers_under_a_flapping_pointer_match_the_version_they_name(two_versions: str) -> None:
    with running_service(two_versions) as url:
        expected = expected_scores(url, two_versions, ["vA", "vB"])
        with flapping_pointer(two_versions) as switches:
            mixed, failed, total = hammer(url, expected)
    report(f"service: {total} requests, {switches[0]} switches, {mixed} mixed, {failed} failed")
    assert (mixed, failed) == (0, 0)


def test_publish_and_rollbacks_under_load_never_mix_or_fail(two_versions: str) -> None:
    publisher = RedisPublisher.from_url(two_versions)
    with running_service(two_versions) as url:
        publisher.publish(version_snapshot("vC"), keep=5)
        expected = expected_scores(url, two_versions, ["vA", "vB", "vC"])
        stop, switches = threading.Event(), [0]

        def roll() -> None:
            while not stop.is_set():
                publisher.rollback(to=("vA", "vB", "vC")[switches[0] % 3])
                switches[0] += 1

        thread = threading.Thread(target=roll, daemon=True)
        thread.start()
        try:
            mixed, failed, total = hammer(url, expected)
        finally:
            stop.set()
            thread.join(timeout=10)
    report(f"publish + rollbacks: {total} requests, {switches[0]} rollbacks, {mixed} mixed, {failed} failed")
    assert switches[0] > 10 and (mixed, failed) == (0, 0)
