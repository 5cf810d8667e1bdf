"""What a client sees when vLLM is down, erroring, answering garbage, hanging or slow: real uvicorn, a real
redis-server, and a fake vLLM that misbehaves on purpose (tests/integration/fake_vllm.py).

With the fallback on (the default) every such request is a 200 with the code-only score, marked
`degraded`; with it off, 503 (down), 502 (erroring, garbage) or 504 (past the deadline), always with a short
message and a request id, never the backend's URL credentials or its error body.

    .venv/bin/pytest -m integration tests/integration/test_service_vllm_failures.py -s
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from app.schemas import ErrorResponse, PredictResponse, ReadyResponse
from model_store.contract.fusion import CodeScore, sigmoid
from model_store.publish.redis import RedisPublisher
from tests.integration.chaos import report
from tests.integration.conftest import free_port
from tests.integration.fake_vllm import P_YES, SECRET, running_fake_vllm, set_fake_mode
from tests.integration.service_process import running_service
from tests.integration.test_redis_restart import burst
from tests.integration.test_service_redis import make_snapshot

pytestmark = pytest.mark.integration

CODES = CodeScore(bits=32, scale=0.05, bias=-0.2, unknown_user_code=0, unknown_item_code=0)
PASSWORD = "S3cretPw"
BODY = {"user_id": "u1", "item_ids": ["i1", "i3"]}


@pytest.fixture(scope="module")
def published(redis_server: str) -> str:
    snapshot = make_snapshot("v1")
    manifest = snapshot.manifest.model_copy(update={"code_score": CODES})
    RedisPublisher.from_url(redis_server).publish(
        snapshot.__class__(manifest, snapshot.users, snapshot.items)
    )
    return redis_server


@pytest.fixture(scope="module")
def fake_vllm() -> Iterator[str]:
    with running_fake_vllm() as url:
        yield url


def service_env(vllm_url: str, **extra: str) -> dict[str, str]:
    with_password = vllm_url.replace("http://", f"http://admin:{PASSWORD}@")
    return {
        "BINLLM_BACKEND": "vllm",
        "BINLLM_VLLM__BASE_URL": with_password,
        "BINLLM_VLLM__MAX_RETRIES": "1",
        "BINLLM_DEADLINE_S": "1.0",
        **extra,
    }


@pytest.fixture(scope="module")
def with_fallback(published: str, fake_vllm: str) -> Iterator[str]:
    with running_service(published, **service_env(fake_vllm)) as url:
        yield url


@pytest.fixture(scope="module")
def without_fallback(published: str, fake_vllm: str) -> Iterator[str]:
    with running_service(published, **service_env(fake_vllm, BINLLM_FALLBACK="false")) as url:
        yield url


def outcomes(url: str, n: int = 12) -> Counter[str]:
    """n concurrent requests, each summed up as '200', '200 degraded=<reason>' or '<status> <type>'."""

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=15) as client:
            return await asyncio.gather(*(client.post("/predict", json=BODY) for _ in range(n)))

    seen: Counter[str] = Counter()
    for response in asyncio.run(run()):
        assert SECRET not in response.text and PASSWORD not in response.text
        if response.status_code == 200:
            answer = PredictResponse.model_validate(response.json())
            seen[f"200 degraded={answer.degraded}" if answer.degraded else "200"] += 1
        else:
            error = ErrorResponse.model_validate(response.json()).error
            assert f"request id {response.headers['x-request-id']}" in error.message
            seen[f"{response.status_code} {error.type}"] += 1
    return seen


@pytest.mark.parametrize(
    ("mode", "on", "off"),
    [
        ("ok", "200", "200"),
        ("error", "200 degraded=llm_unavailable", "502 backend_bad_response"),
        ("garbage", "200 degraded=llm_unavailable", "502 backend_bad_response"),
        ("hang", "200 degraded=llm_deadline", "504 deadline_exceeded"),
        ("slow", "200 degraded=llm_deadline", "504 deadline_exceeded"),
    ],
)
def test_a_misbehaving_vllm_gives_the_code_score_or_a_clear_error(
    fake_vllm: str, with_fallback: str, without_fallback: str, mode: str, on: str, off: str
) -> None:
    set_fake_mode(fake_vllm, mode, delay_s=3.0)
    try:
        seen_on, seen_off = outcomes(with_fallback), outcomes(without_fallback)
    finally:
        set_fake_mode(fake_vllm, "ok")
    report(f"vLLM {mode}: fallback on {dict(seen_on)}; fallback off {dict(seen_off)}")
    assert seen_on == {on: 12} and seen_off == {off: 12}


def test_degraded_answers_are_the_published_code_scores(fake_vllm: str, with_fallback: str) -> None:
    set_fake_mode(fake_vllm, "error")
    try:
        answer = PredictResponse.model_validate(httpx.post(f"{with_fallback}/predict", json=BODY).json())
    finally:
        set_fake_mode(fake_vllm, "ok")
    assert answer.score_kind == "codes" and answer.cold == ["i3"]
    assert [s.score for s in answer.scores] == [sigmoid(CODES.logit(7, 1)), sigmoid(CODES.logit(7, None))]
    healthy = PredictResponse.model_validate(httpx.post(f"{with_fallback}/predict", json=BODY).json())
    assert healthy.degraded is None and [s.p_yes for s in healthy.scores] == [P_YES, P_YES]
    metrics = httpx.get(f"{with_fallback}/metrics").text
    assert 'binllm_degraded_total{reason="llm_unavailable"}' in metrics


def test_vllm_down_is_degraded_with_the_fallback_and_a_503_without(published: str) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with running_service(published, **service_env(nowhere)) as on:
        seen_on = outcomes(on)
    with running_service(published, **service_env(nowhere, BINLLM_FALLBACK="false")) as off:
        seen_off = outcomes(off)
        assert set(burst(off, 5)) == {503}
    report(f"vLLM down: fallback on {dict(seen_on)}; fallback off {dict(seen_off)}")
    assert seen_on == {"200 degraded=llm_unavailable": 12}
    assert seen_off == {"503 backend_unavailable": 12}


@pytest.mark.parametrize("mode", ["error", "garbage", "hang"])
def test_readyz_tells_the_truth_within_about_a_second(
    fake_vllm: str, with_fallback: str, without_fallback: str, mode: str
) -> None:
    for _ in range(50):  # a failed probe of an earlier test is cached for 2 s
        if httpx.get(f"{with_fallback}/readyz").json()["status"] == "ready":
            break
        time.sleep(0.1)
    assert httpx.get(f"{with_fallback}/readyz").json()["status"] == "ready"
    set_fake_mode(fake_vllm, mode)
    try:
        time.sleep(2.1)  # past the probe cache
        start = time.perf_counter()
        degraded = httpx.get(f"{with_fallback}/readyz", timeout=10)
        unready = httpx.get(f"{without_fallback}/readyz", timeout=10)
        seconds = time.perf_counter() - start
    finally:
        set_fake_mode(fake_vllm, "ok")
    report(
        f"vLLM {mode}: /readyz {degraded.status_code} {degraded.json()} and {unready.status_code} in {seconds:.2f} s"
    )
    ready = ReadyResponse.model_validate(degraded.json())
    assert degraded.status_code == 200 and (ready.status, ready.degraded) == ("degraded", "llm_unavailable")
    assert unready.status_code == 503 and "backend 'vllm' not ready" in unready.json()["error"]["message"]
    assert seconds < 2.5  # two probes, each bounded to about 1 s


def test_a_publish_naming_another_tokenizer_is_caught_without_a_restart(
    published: str, fake_vllm: str, with_fallback: str
) -> None:
    publisher = RedisPublisher.from_url(published)

    def publish(version: str, yes_id: int) -> None:
        snapshot = make_snapshot(version, model_version=f"m-{version}")
        model = snapshot.manifest.model.model_copy(update={"yes_token_id": yes_id})
        manifest = snapshot.manifest.model_copy(update={"code_score": CODES, "model": model})
        publisher.publish(snapshot.__class__(manifest, snapshot.users, snapshot.items))

    publish("v7", yes_id=5)  # the server's token 5 is " Hello", not "Yes"
    wrong = PredictResponse.model_validate(httpx.post(f"{with_fallback}/predict", json=BODY).json())
    time.sleep(2.1)  # past the readiness probe's cache
    ready = ReadyResponse.model_validate(httpx.get(f"{with_fallback}/readyz").json())
    publish("v8", yes_id=1)
    right = PredictResponse.model_validate(httpx.post(f"{with_fallback}/predict", json=BODY).json())
    report(f"wrong tokenizer: {wrong.degraded}, /readyz {ready.status}; fixed by a publish: {right.degraded}")
    assert wrong.degraded == "llm_unavailable" and ready.status == "degraded"
    assert right.degraded is None and right.model_version == "m-v8"
