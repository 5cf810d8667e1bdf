"""Consistent hashing over vLLM replicas: stable owners, ~1/N of users move when a replica joins or leaves, dead
replicas skipped, and VllmScorer sending each user prefix to its replica (httpx.MockTransport as the servers)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from app.errors import BackendUnavailableError
from app.scorers.base import PromptGroup
from app.scorers.routing import RESOLVE_EVERY_S, ReplicaRing, Replicas, replica_urls
from app.scorers.vllm import VllmScorer
from app.settings import VllmSettings

A, B, C, D = (f"http://vllm-{name}:8000" for name in "abcd")
USERS = [f"user {k} prefix" for k in range(4000)]


def test_every_replica_owns_a_fair_share_and_owners_are_stable() -> None:
    ring = ReplicaRing([A, B, C])
    owners = [ring.owner(key) for key in USERS]
    shares = {url: owners.count(url) / len(USERS) for url in (A, B, C)}
    assert all(0.25 < share < 0.42 for share in shares.values()), shares
    assert owners == [ReplicaRing([C, A, B]).owner(key) for key in USERS]  # order of the list does not matter


@pytest.mark.parametrize(("before", "after"), [([A, B, C], [A, B, C, D]), ([A, B, C, D], [A, B, D])])
def test_a_replica_joining_or_leaving_moves_about_one_nth_of_users(
    before: list[str], after: list[str]
) -> None:
    old, new = ReplicaRing(before), ReplicaRing(after)
    moved = sum(old.owner(key) != new.owner(key) for key in USERS) / len(USERS)
    n = max(len(before), len(after))
    assert 0.5 / n < moved < 1.6 / n, moved
    changed = {url for url in before + after if url not in before or url not in after}
    assert all(
        old.owner(k) in changed or new.owner(k) in changed for k in USERS if old.owner(k) != new.owner(k)
    )


def test_a_replica_marked_down_goes_last_until_its_time_is_up() -> None:
    now = [0.0]
    ring = ReplicaRing([A, B], down_s=5.0, clock=lambda: now[0])
    key = next(k for k in USERS if ring.owner(k) == A)
    assert ring.order(key) == [A, B]
    ring.mark_down(A)
    assert ring.order(key) == [B, A]
    now[0] = 5.1
    assert ring.order(key) == [A, B]


def test_base_url_lists_replicas_separated_by_commas() -> None:
    assert replica_urls(f"{A}/, {B}") == [A, B]
    with pytest.raises(ValueError, match="listed twice"):
        ReplicaRing([A, A])


def scorer_over(down: set[str], calls: list[str]) -> VllmScorer:
    def reply(request: httpx.Request) -> httpx.Response:
        url = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        calls.append(url)
        if url in down:
            raise httpx.ConnectError("refused", request=request)
        n = len(json.loads(request.content)["input"])
        data = [{"index": i, "probs": [0.5], "num_classes": 1} for i in range(n)]
        return httpx.Response(200, json={"model": "m", "data": data})

    settings = VllmSettings(base_url=f"{A},{B}", model="m", max_retries=2)
    return VllmScorer(settings, transport=httpx.MockTransport(reply))


def test_each_user_prefix_always_goes_to_its_own_replica() -> None:
    calls: list[str] = []
    scorer = scorer_over(set(), calls)
    ring = ReplicaRing([A, B])

    async def run() -> None:
        for key in USERS[:40]:
            for _ in range(2):
                await scorer.score([PromptGroup(prefix=key, suffixes=(" x", " y"))])
        await scorer.aclose()

    asyncio.run(run())
    assert calls == [ring.owner(key) for key in USERS[:40] for _ in range(2)]
    assert set(calls) == {A, B}


def test_the_user_id_routes_when_given_so_equal_prefixes_spread_over_replicas() -> None:
    calls: list[str] = []
    scorer = scorer_over(set(), calls)
    users = [f"u{k}" for k in range(40)]

    async def run() -> None:
        for user in users:  # new users: no history, no code, the very same prefix
            await scorer.score([PromptGroup(prefix="same prefix", suffixes=(" x",), route=user)])
        await scorer.aclose()

    asyncio.run(run())
    ring = ReplicaRing([A, B])
    assert calls == [ring.owner(user) for user in users] and set(calls) == {A, B}


def test_a_dead_replica_is_skipped_without_failing_a_request() -> None:
    calls: list[str] = []
    scorer = scorer_over({A}, calls)
    keys = [k for k in USERS if ReplicaRing([A, B]).owner(k) == A][:5]

    async def run() -> list[list[list[float]]]:
        try:
            return [await scorer.score([PromptGroup(prefix=key, suffixes=(" x",))]) for key in keys]
        finally:
            await scorer.aclose()

    assert asyncio.run(run()) == [[[0.5]]] * 5
    assert calls == [A, B, B, B, B, B]  # A refused once, then was tried last while marked down


def test_all_replicas_down_is_backend_unavailable() -> None:
    scorer = scorer_over({A, B}, [])

    async def run() -> None:
        try:
            await scorer.score([PromptGroup(prefix="someone", suffixes=(" x",))])
        finally:
            await scorer.aclose()

    with pytest.raises(BackendUnavailableError, match="unreachable"):
        asyncio.run(run())


def test_a_headless_service_is_resolved_into_replicas_and_followed_as_pods_come_and_go() -> None:
    now = [0.0]
    answers = [["10.0.0.1", "10.0.0.2"]]
    closed: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("vllm-headless", 8000)
        return answers[0]

    class Client:
        def __init__(self, url: str) -> None:
            self.url = url

        async def aclose(self) -> None:
            closed.append(self.url)

    replicas = Replicas(
        "http://vllm-headless:8000",
        Client,  # type: ignore[arg-type]
        resolve=True,
        resolver=resolver,
        clock=lambda: now[0],
    )

    async def run() -> list[list[str]]:
        seen = [sorted(await replicas.order("u1"))]
        answers[0] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]  # a pod joins
        seen.append(sorted(await replicas.order("u1")))  # not looked up again yet
        now[0] = RESOLVE_EVERY_S
        seen.append(sorted(await replicas.order("u1")))
        return seen

    first, cached, joined = asyncio.run(run())
    assert first == cached == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
    assert joined == ["http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"]
    assert closed == ["http://vllm-headless:8000"]  # the seed URL's pool, replaced by the pods'


def test_a_failed_lookup_keeps_the_known_replicas() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    replicas = Replicas(
        "http://vllm-headless:8000", lambda url: httpx.AsyncClient(), resolve=True, resolver=resolver
    )
    assert asyncio.run(replicas.order("u1")) == ["http://vllm-headless:8000"]
