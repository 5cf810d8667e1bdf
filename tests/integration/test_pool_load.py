"""Busy but healthy dependencies: more concurrent requests than pooled connections wait for one, bounded in
time, and only past that wait get 503 `overloaded` (real redis-server, real uvicorn, the fake vLLM).

Before the fix the Redis pool refused the 65th concurrent request at once ("Too many connections", 503
`store_unavailable` while Redis was healthy), and a request waiting for a pooled vLLM connection was cut by
the per-call read timeout and answered as if vLLM were down.

    .venv/bin/pytest -m integration tests/integration/test_pool_load.py -s
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.errors import BinllmError, OverloadedError, StoreUnavailableError
from app.scorers.base import PromptGroup
from app.scorers.vllm import VllmScorer
from app.settings import VllmSettings
from app.store.redis import RedisStore
from model_store.publish.redis import RedisPublisher
from tests.integration.chaos import report
from tests.integration.conftest import REDIS_SERVER, start_redis, stop_process
from tests.integration.fake_vllm import running_fake_vllm, set_fake_mode
from tests.integration.service_process import running_service
from tests.integration.test_service_redis import make_snapshot

pytestmark = pytest.mark.integration

POOL = 4
CLIENTS = 4 * POOL


@pytest.fixture(scope="module")
def published(redis_server: str) -> str:
    RedisPublisher.from_url(redis_server).publish(make_snapshot("v1"))
    return redis_server


@pytest.fixture(scope="module")
def fake_vllm() -> Iterator[str]:
    with running_fake_vllm() as url:
        yield url


def _outcome(result: object) -> str:
    return type(result).__name__ if isinstance(result, BaseException) else "ok"


def test_store_lookups_at_four_times_the_pool_size_all_succeed(published: str) -> None:
    async def run() -> Counter[str]:
        store = RedisStore(published, max_connections=POOL, item_cache_size=0)
        await store.open()
        try:
            outcomes: Counter[str] = Counter()
            for _ in range(10):
                results = await asyncio.gather(
                    *(store.lookup("u3", [f"x{10 + k}", "i1"]) for k in range(CLIENTS)),
                    return_exceptions=True,
                )
                outcomes.update(_outcome(r) for r in results)
            return outcomes
        finally:
            await store.aclose()

    outcomes = asyncio.run(run())
    report(f"redis pool of {POOL}, {CLIENTS} concurrent lookups x 10: {dict(outcomes)}")
    assert outcomes == Counter({"ok": CLIENTS * 10})


def test_service_at_four_times_the_redis_pool_size_answers_every_request(published: str) -> None:
    with running_service(
        published, BINLLM_REDIS_MAX_CONNECTIONS=str(POOL), BINLLM_ITEM_CACHE_SIZE="0"
    ) as url:

        async def run() -> Counter[int]:
            limits = httpx.Limits(max_connections=CLIENTS)
            async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:

                async def one_client(k: int) -> list[int]:
                    body = {"user_id": "u3", "item_ids": [f"x{10 + k % 20}", "i1", "i2"]}
                    return [(await client.post("/predict", json=body)).status_code for _ in range(20)]

                per_client = await asyncio.gather(*(one_client(k) for k in range(CLIENTS)))
            return Counter(status for statuses in per_client for status in statuses)

        statuses = asyncio.run(run())
    report(f"service, redis pool of {POOL}, {CLIENTS} concurrent clients x 20 requests: {dict(statuses)}")
    assert statuses == Counter({200: CLIENTS * 20})


def test_a_request_that_waits_past_the_pool_wait_gets_overloaded_not_store_unavailable(
    tmp_path: Path,
) -> None:
    """One pooled connection held by a request to a frozen Redis: the next request waits `pool_wait_s`,
    then 503 overloaded (Retry-After); the holder itself times out as store_unavailable."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    proc, url = start_redis(tmp_path)
    RedisPublisher.from_url(url).publish(make_snapshot("v1"))

    async def run() -> list[tuple[str, float]]:
        store = RedisStore(url, max_connections=1, timeout_s=1.5, pool_wait_s=0.3, retries=0)
        await store.open()
        os.kill(proc.pid, signal.SIGSTOP)
        try:

            async def timed(delay: float) -> tuple[str, float]:
                await asyncio.sleep(delay)
                start = time.perf_counter()
                try:
                    await store.lookup("u1", ["i1"])
                except BinllmError as exc:
                    return type(exc).__name__, time.perf_counter() - start
                return "ok", time.perf_counter() - start

            return list(await asyncio.gather(timed(0.0), timed(0.1)))
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            await store.aclose()

    try:
        (holder, holder_s), (waiter, waiter_s) = asyncio.run(run())
    finally:
        stop_process(proc)
    report(
        f"pool of 1, Redis frozen: holder {holder} after {holder_s:.2f} s, waiter {waiter} after {waiter_s:.2f} s"
    )
    assert holder == StoreUnavailableError.__name__
    assert waiter == OverloadedError.__name__ and 0.25 < waiter_s < 1.4
    assert OverloadedError("x").headers() == {"Retry-After": "1"}


def test_vllm_calls_at_four_times_the_pool_size_wait_for_a_connection(fake_vllm: str) -> None:
    """Each call takes 0.4 s against a 1 s read timeout; the 8th of 8 on a pool of 2 waits 1.2 s first."""
    set_fake_mode(fake_vllm, "slow", delay_s=0.4)
    group = PromptGroup(prefix="User likes films.", suffixes=(" Toy Story?",))

    async def run() -> Counter[str]:
        settings = VllmSettings(base_url=fake_vllm, model="fake-model", max_connections=2, timeout_s=1.0)
        scorer = VllmScorer(settings)
        try:
            results = await asyncio.gather(*(scorer.score([group]) for _ in range(8)), return_exceptions=True)
        finally:
            await scorer.aclose()
        return Counter(_outcome(r) for r in results)

    try:
        outcomes = asyncio.run(run())
    finally:
        set_fake_mode(fake_vllm, "ok")
    report(f"vLLM pool of 2, 8 concurrent calls of 0.4 s, 1 s read timeout: {dict(outcomes)}")
    assert outcomes == Counter({"ok": 8})


def test_a_vllm_call_that_waits_past_the_pool_wait_gets_overloaded(fake_vllm: str) -> None:
    set_fake_mode(fake_vllm, "hang")
    group = PromptGroup(prefix="User likes films.", suffixes=(" Toy Story?",))

    async def run() -> list[str]:
        settings = VllmSettings(base_url=fake_vllm, model="fake-model", max_connections=1, timeout_s=1.0)
        scorer = VllmScorer(settings, pool_wait_s=0.3)
        try:

            async def later(delay: float) -> object:
                await asyncio.sleep(delay)
                return await scorer.score([group])

            results = await asyncio.gather(later(0.0), later(0.1), return_exceptions=True)
        finally:
            await scorer.aclose()
        return [_outcome(r) for r in results]

    try:
        outcomes = asyncio.run(run())
    finally:
        set_fake_mode(fake_vllm, "ok")
    assert outcomes == ["BackendUnavailableError", "OverloadedError"]
