"""VllmScorer speaks vLLM 0.32's /classify and /v1/completions protocol, retries boundedly and fails as 503.

httpx.MockTransport stands in for the server: it records each request and answers protocol-shaped JSON.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable

import httpx
import pytest

import app.scorers.vllm as vllm_module
from app.errors import BackendResponseError, BackendUnavailableError, SnapshotMissingError
from app.scorers.base import PromptGroup
from app.scorers.vllm import VllmScorer
from app.settings import VllmSettings
from model_store.contract.snapshot import ModelManifest

YES_ID, NO_ID = 7566, 1771
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_module, "_BACKOFF_S", 0.0)


def _manifest() -> ModelManifest:
    return ModelManifest(
        model_version="m1", yes_token="ĠYes", no_token="ĠNo", yes_token_id=YES_ID, no_token_id=NO_ID
    )


_DEFAULT = object()


def _scorer(
    handler: Handler, seen: list[httpx.Request], *, manifest: object = _DEFAULT, **overrides: object
) -> VllmScorer:
    def record(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/detokenize":  # an old vLLM: the served model cannot be checked
            return httpx.Response(404)
        seen.append(request)
        return handler(request)

    fields: dict[str, object] = {"base_url": "http://vllm.test", "model": "smollm2", **overrides}
    settings = VllmSettings.model_validate(fields)
    if manifest is _DEFAULT:
        manifest = _manifest() if settings.mode == "completions" else None
    assert manifest is None or isinstance(manifest, ModelManifest)
    return VllmScorer(settings, manifest, transport=httpx.MockTransport(record))


def _classify_reply(request: httpx.Request) -> httpx.Response:
    """A from_2_way_softmax answer: one prob per prompt; prompt i scores (i + 1) / 10."""
    prompts = json.loads(request.content)["input"]
    data = [
        {"index": i, "label": None, "probs": [(i + 1) / 10], "num_classes": 1} for i in range(len(prompts))
    ]
    usage = {"prompt_tokens": 1, "total_tokens": 1, "completion_tokens": 0}
    return httpx.Response(
        200, json={"id": "c", "object": "list", "model": "smollm2", "data": data, "usage": usage}
    )


def _score(scorer: VllmScorer, groups: list[PromptGroup]) -> list[list[float]]:
    async def run() -> list[list[float]]:
        try:
            return await scorer.score(groups)
        finally:
            await scorer.aclose()

    return asyncio.run(run())


GROUPS = [PromptGroup("user A ", ("x1", "x2")), PromptGroup("user A text ", ("x3",))]


def test_classify_sends_every_prompt_in_one_documented_request_and_splits_scores_by_group() -> None:
    seen: list[httpx.Request] = []
    scores = _score(_scorer(_classify_reply, seen), GROUPS)
    assert len(seen) == 1
    assert (seen[0].method, seen[0].url.path) == ("POST", "/classify")
    assert json.loads(seen[0].content) == {
        "model": "smollm2",
        "input": ["user A x1", "user A x2", "user A text x3"],
        "use_activation": True,
        "add_special_tokens": True,
    }
    assert scores == [[0.1, 0.2], [0.3]]


def test_classify_orders_scores_by_response_index_not_by_position() -> None:
    def shuffled(request: httpx.Request) -> httpx.Response:
        reply = _classify_reply(request).json()
        reply["data"].reverse()
        return httpx.Response(200, json=reply)

    assert _score(_scorer(shuffled, []), GROUPS) == [[0.1, 0.2], [0.3]]


def test_completions_asks_for_exactly_the_yes_no_logprobs_and_scores_their_softmax() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        n = len(json.loads(request.content)["prompt"])
        top = {f"token_id:{YES_ID}": math.log(0.3), f"token_id:{NO_ID}": math.log(0.1)}
        logprobs = {
            "text_offset": [0],
            "token_logprobs": [-1.2],
            "tokens": ["token_id:1"],
            "top_logprobs": [top],
        }
        choices = [
            {"index": i, "text": " Yes", "logprobs": logprobs, "finish_reason": "length"} for i in range(n)
        ]
        usage = {"prompt_tokens": 1, "total_tokens": 2, "completion_tokens": 1}
        body = {
            "id": "c",
            "object": "text_completion",
            "model": "smollm2",
            "choices": choices,
            "usage": usage,
        }
        return httpx.Response(200, json=body)

    seen: list[httpx.Request] = []
    scores = _score(_scorer(reply, seen, mode="completions"), GROUPS)
    assert (seen[0].method, seen[0].url.path) == ("POST", "/v1/completions")
    assert json.loads(seen[0].content) == {
        "model": "smollm2",
        "prompt": ["user A x1", "user A x2", "user A text x3"],
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": 2,
        "logprob_token_ids": [YES_ID, NO_ID],
        "return_tokens_as_token_ids": True,
        "add_special_tokens": True,
    }
    assert scores == [[pytest.approx(0.75)] * 2, [pytest.approx(0.75)]]


def test_completions_mode_without_a_manifest_answers_503_and_sends_nothing() -> None:
    seen: list[httpx.Request] = []
    scorer = _scorer(_classify_reply, seen, mode="completions", manifest=None)
    with pytest.raises(SnapshotMissingError, match="Yes/No token ids") as info:
        _score(scorer, GROUPS)
    assert info.value.status_code == 503
    assert seen == []


def test_model_name_is_discovered_once_from_v1_models() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "served", "object": "model"}]})
        return _classify_reply(request)

    seen: list[httpx.Request] = []
    scorer = _scorer(reply, seen, model=None)

    async def twice() -> None:
        await scorer.score(GROUPS)
        await scorer.score(GROUPS)
        await scorer.aclose()

    asyncio.run(twice())
    assert [r.url.path for r in seen] == ["/v1/models", "/classify", "/classify"]
    assert json.loads(seen[-1].content)["model"] == "served"


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried_max_retries_times_then_reported_as_503(status: int) -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(BackendUnavailableError) as info:
        _score(_scorer(lambda _: httpx.Response(status), seen, max_retries=2), GROUPS)
    assert len(seen) == 3
    assert info.value.status_code == 503
    assert "Retry-After" in info.value.headers()


def test_connect_error_is_retried_then_reported_as_backend_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    seen: list[httpx.Request] = []
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        _score(_scorer(refuse, seen, max_retries=1), GROUPS)
    assert len(seen) == 2


def test_a_transient_503_followed_by_success_returns_scores() -> None:
    answers = iter([httpx.Response(503)])

    def flaky(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or _classify_reply(request)

    seen: list[httpx.Request] = []
    assert _score(_scorer(flaky, seen), GROUPS) == [[0.1, 0.2], [0.3]]
    assert len(seen) == 2


def test_read_timeout_is_not_retried() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    seen: list[httpx.Request] = []
    with pytest.raises(BackendUnavailableError, match="in time"):
        _score(_scorer(slow, seen, max_retries=3), GROUPS)
    assert len(seen) == 1


def test_a_4xx_from_vllm_is_a_bad_backend_response_and_not_retried() -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(BackendResponseError) as info:
        _score(_scorer(lambda _: httpx.Response(400, json={"error": {"message": "too long"}}), seen), GROUPS)
    assert len(seen) == 1
    assert info.value.status_code == 502


def test_a_reply_with_fewer_rows_than_prompts_is_a_bad_backend_response() -> None:
    def short(request: httpx.Request) -> httpx.Response:
        reply = _classify_reply(request).json()
        reply["data"].pop()
        return httpx.Response(200, json=reply)

    with pytest.raises(BackendResponseError, match="2 rows for 3 prompts"):
        _score(_scorer(short, []), GROUPS)


def test_a_two_class_classifier_is_refused_with_a_hint() -> None:
    def two_way(request: httpx.Request) -> httpx.Response:
        reply = _classify_reply(request).json()
        for row in reply["data"]:
            row["probs"], row["num_classes"] = [0.4, 0.6], 2
        return httpx.Response(200, json=reply)

    with pytest.raises(BackendResponseError, match="from_2_way_softmax"):
        _score(_scorer(two_way, []), GROUPS)


def test_api_key_is_sent_as_bearer_token() -> None:
    seen: list[httpx.Request] = []
    _score(_scorer(_classify_reply, seen, api_key="s3cret"), GROUPS)
    assert seen[0].headers["Authorization"] == "Bearer s3cret"


def test_ready_means_a_real_tiny_classify_call_answers_not_just_health() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def health_only(request: httpx.Request) -> httpx.Response:  # /health 200, /classify broken
        return httpx.Response(200) if request.url.path == "/health" else httpx.Response(500, text="boom")

    scorers = [_scorer(_classify_reply, []), _scorer(health_only, []), _scorer(refuse, [])]

    async def check() -> list[bool]:
        result = [await scorer.ready() for scorer in scorers]
        for scorer in scorers:
            await scorer.aclose()
        return result

    assert asyncio.run(check()) == [True, False, False]


def test_a_hanging_vllm_makes_ready_false_within_the_probe_timeout() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    settings = VllmSettings(base_url="http://vllm.test", model="smollm2")
    scorer = VllmScorer(settings, transport=httpx.MockTransport(hang))

    async def check() -> tuple[bool, float, bool]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        first = await scorer.ready()
        seconds = loop.time() - start
        cached = await scorer.ready()  # answered from the cache at once
        await scorer.aclose()
        return first, seconds, cached

    first, seconds, cached = asyncio.run(check())
    assert first is False and cached is False and seconds < vllm_module.PROBE_TIMEOUT_S + 0.3


def test_completions_mode_reads_the_token_ids_of_the_current_snapshot_per_call() -> None:
    seen: list[httpx.Request] = []
    current = [_manifest()]

    def reply(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/detokenize":
            return httpx.Response(404)
        seen.append(request)
        ids = json.loads(request.content)["logprob_token_ids"]
        lp = {f"token_id:{ids[0]}": -1.0, f"token_id:{ids[1]}": -1.0}
        choices = [{"index": 0, "text": "x", "logprobs": {"top_logprobs": [lp]}}]
        return httpx.Response(200, json={"id": "c", "model": "smollm2", "choices": choices})

    settings = VllmSettings(base_url="http://vllm.test", model="smollm2", mode="completions")
    scorer = VllmScorer(settings, manifest_source=lambda: current[0], transport=httpx.MockTransport(reply))

    async def twice() -> None:
        await scorer.score([PromptGroup("p", ("a",))])
        current[0] = current[0].model_copy(update={"yes_token_id": 77, "no_token_id": 78})  # a publish
        await scorer.score([PromptGroup("p", ("a",))])
        await scorer.aclose()

    asyncio.run(twice())
    assert [json.loads(r.content)["logprob_token_ids"] for r in seen] == [[YES_ID, NO_ID], [77, 78]]


def detokenizing(pieces: dict[int, str], then: Handler) -> Handler:
    """A server whose /detokenize turns ids into `pieces`; every other path goes to `then`."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/detokenize":
            (token,) = json.loads(request.content)["tokens"]
            return httpx.Response(200, json={"prompt": pieces.get(token, "?")})
        return then(request)

    return handle


def test_a_server_whose_tokenizer_disagrees_with_the_snapshot_is_refused_until_a_publish_fixes_it() -> None:
    current = [_manifest()]  # yes = YES_ID, no = NO_ID
    pieces = {YES_ID: " Yes", NO_ID: " No", 77: " Hello", 78: " world"}
    handler = detokenizing(pieces, _classify_reply)
    settings = VllmSettings(base_url="http://vllm.test", model="smollm2")
    scorer = VllmScorer(settings, manifest_source=lambda: current[0], transport=httpx.MockTransport(handler))

    async def run() -> tuple[list[list[float]], str, list[list[float]]]:
        good = await scorer.score(GROUPS)
        current[0] = current[0].model_copy(
            update={"model_version": "m2", "yes_token_id": 77, "no_token_id": 78}
        )
        with pytest.raises(BackendResponseError) as refused:
            await scorer.score(GROUPS)
        current[0] = current[0].model_copy(
            update={"model_version": "m3", "yes_token_id": YES_ID, "no_token_id": NO_ID}
        )
        again = await scorer.score(GROUPS)
        await scorer.aclose()
        return good, refused.value.message, again

    good, message, again = asyncio.run(run())
    assert good == again and len(good) == 2
    assert "does not serve snapshot model m2" in message and "' Hello'" in message
