"""Redis killed, restarted and frozen under a warm connection pool: what clients see (real redis-server,
real uvicorn, backend=instant).

Before the fix the pool kept dead connections after a restart: /readyz failed seconds later and a burst of
60 requests got 44 503s. Now a dead connection is retried on a fresh one, so once Redis answers again no
request fails; a frozen Redis (SIGSTOP) costs one timeout (about `BINLLM_REDIS_TIMEOUT_S`) and a 503.

    .venv/bin/pytest -m integration tests/integration/test_redis_restart.py -s
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from model_store.publish.redis import RedisPublisher
from tests.integration.chaos import report
from tests.integration.conftest import REDIS_SERVER, start_redis, stop_process
from tests.integration.service_process import running_service
from tests.integration.test_service_redis import make_snapshot

pytestmark = pytest.mark.integration


def burst(url: str, n: int = 60) -> dict[int, int]:
    """n concurrent /predict requests; how many got each status."""

    async def run() -> dict[int, int]:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as client:
            responses = await asyncio.gather(
                *(
                    client.post("/predict", json={"user_id": "u1", "item_ids": [f"x{10 + k % 20}"]})
                    for k in range(n)
                )
            )
        counts: dict[int, int] = {}
        for response in responses:
            counts[response.status_code] = counts.get(response.status_code, 0) + 1
        return counts

    return asyncio.run(run())


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    return tmp_path


def test_after_a_redis_restart_no_request_fails_on_a_stale_connection(workdir: Path) -> None:
    proc, redis_url = start_redis(workdir)
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    RedisPublisher.from_url(redis_url).publish(make_snapshot("v1"))
    try:
        with running_service(redis_url) as url:
            assert burst(url) == {200: 60}  # the pool now holds many live connections
            proc.kill()
            proc.wait()
            down = burst(url, 10)
            proc, _ = start_redis(workdir, port)  # same port, empty: publish again
            RedisPublisher.from_url(redis_url).publish(make_snapshot("v1"))
            ready = httpx.get(f"{url}/readyz", timeout=5).status_code
            first, later = burst(url), None
            time.sleep(6)  # past the health-check interval: idle pooled connections are PINGed first
            later = burst(url)
    finally:
        stop_process(proc)
    report(f"redis down: {down}; just restarted: readyz {ready}, burst {first}; 6 s later: {later}")
    assert set(down) == {503}
    assert ready == 200
    assert first == {200: 60} and later == {200: 60}


def test_a_frozen_redis_costs_one_timeout_then_recovers(workdir: Path) -> None:
    proc, redis_url = start_redis(workdir)
    RedisPublisher.from_url(redis_url).publish(make_snapshot("v1"))
    try:
        with running_service(redis_url, BINLLM_REDIS_TIMEOUT_S="0.5") as url:
            assert burst(url, 20) == {200: 20}
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                start = time.perf_counter()
                frozen = httpx.post(f"{url}/predict", json={"user_id": "u1", "item_ids": ["i1"]}, timeout=10)
                seconds = time.perf_counter() - start
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            after = burst(url)
    finally:
        stop_process(proc)
    report(f"redis frozen: {frozen.status_code} after {seconds:.2f} s; thawed: {after}")
    assert frozen.status_code == 503 and frozen.headers["retry-after"] == "1"
    assert seconds < 2.0
    assert after == {200: 60}
