"""Two vLLM replicas, one misbehaving (hanging, or answering 429/5xx): it is ejected for a back-off period and
its users move to the healthy one; readiness reports each replica (two fake vLLM servers, real HTTP).

Before the fix only a refused connection moved a request to another replica: a hanging replica degraded about
half the requests while the other was healthy, and /readyz probed one replica only.

    .venv/bin/pytest -m integration tests/integration/test_vllm_outliers.py -s
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from app.errors import BinllmError
from app.schemas import PredictResponse, ReadyResponse
from app.scorers.base import PromptGroup
from app.scorers.vllm import VllmScorer
from app.settings import VllmSettings
from model_store.publish.redis import RedisPublisher
from tests.integration.chaos import report
from tests.integration.fake_vllm import fake_state, running_fake_vllm, set_fake_mode
from tests.integration.service_process import running_service
from tests.integration.test_service_redis import make_snapshot

pytestmark = pytest.mark.integration

USERS = [f"user-{k}" for k in range(80)]


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[str]]:
    with running_fake_vllm() as first, running_fake_vllm() as second:
        yield [first, second]


@pytest.fixture(autouse=True)
def healthy_after(replicas: list[str]) -> Iterator[None]:
    yield
    for url in replicas:
        set_fake_mode(url, "ok")


def scorer_for(replicas: list[str]) -> VllmScorer:
    settings = VllmSettings(base_url=",".join(replicas), model="fake-model", timeout_s=0.5, max_retries=2)
    return VllmScorer(settings)


def group(user: str) -> PromptGroup:
    return PromptGroup(prefix=f"{user} likes films.", suffixes=(" Heat?",), route=user)


async def score_users(scorer: VllmScorer, users: list[str]) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    for user in users:
        try:
            await scorer.score([group(user)])
            outcomes["ok"] += 1
        except BinllmError as exc:
            outcomes[type(exc).__name__] += 1
    return outcomes


@pytest.mark.parametrize("mode", ["hang", "busy", "error"])
def test_a_misbehaving_replica_is_ejected_and_its_users_move_to_the_healthy_one(
    replicas: list[str], mode: str
) -> None:
    bad = replicas[0]
    set_fake_mode(bad, mode)
    scorer = scorer_for(replicas)
    owned = [u for u in USERS if scorer._replicas.ring.owner(u) == bad]  # users whose requests go to `bad`
    assert len(owned) >= 8

    async def run() -> tuple[Counter[str], Counter[str]]:
        try:
            first = await score_users(scorer, owned)
            again = await score_users(scorer, owned)  # the replica is ejected now
            return first, again
        finally:
            await scorer.aclose()

    bad_calls = fake_state(bad)["classify_calls"]
    first, again = asyncio.run(run())
    calls_to_bad = fake_state(bad)["classify_calls"] - bad_calls
    report(
        f"replica {mode}: {len(owned)} of its users x 2: {dict(first)}, then {dict(again)}; calls it got: {calls_to_bad}"
    )
    assert first == again == Counter({"ok": len(owned)})
    assert calls_to_bad <= 3  # ejected after a few failures, not asked for every request


def test_readiness_probes_every_replica_and_reports_each(replicas: list[str]) -> None:
    bad, _good = replicas
    set_fake_mode(bad, "hang")
    scorer = scorer_for(replicas)

    async def run() -> tuple[bool, dict[str, bool] | None]:
        try:
            ready = await scorer.ready()
            return ready, scorer.replica_report()
        finally:
            await scorer.aclose()

    ready, per_replica = asyncio.run(run())
    report(f"readiness with replica 0 hanging: ready={ready}, replicas {per_replica}")
    assert ready is True and per_replica == {"replica-0": False, "replica-1": True}


def test_readyz_reports_each_replica_and_predict_answers_from_the_healthy_one(
    replicas: list[str], redis_server: str
) -> None:
    bad, _good = replicas
    RedisPublisher.from_url(redis_server).publish(make_snapshot("v1"))
    set_fake_mode(bad, "hang")
    env = {
        "BINLLM_BACKEND": "vllm",
        "BINLLM_VLLM__BASE_URL": ",".join(replicas),
        "BINLLM_VLLM__TIMEOUT_S": "0.5",
    }
    with running_service(redis_server, **env) as url:
        ready = httpx.get(f"{url}/readyz", timeout=10)
        answers = [
            PredictResponse.model_validate(
                httpx.post(f"{url}/predict", json={"user_id": user, "item_ids": ["i1"]}, timeout=10).json()
            )
            for user in USERS[:20]
        ]
    body = ReadyResponse.model_validate(ready.json())
    report(
        f"/readyz with replica 0 hanging: {ready.status_code} {body.replicas}; degraded answers: {sum(a.degraded is not None for a in answers)} of 20"
    )
    assert ready.status_code == 200 and body.status == "ready"
    assert body.replicas == {"replica-0": False, "replica-1": True}
    assert all(a.degraded is None for a in answers)
