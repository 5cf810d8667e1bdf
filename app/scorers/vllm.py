"""VllmScorer: click scores from a vLLM OpenAI-compatible server, in one HTTP call per request.

Two server set-ups are supported (`BINLLM_VLLM__MODE`):

* `classify` (default): vLLM runs the causal LM as a pooling classifier whose single logit is
  w_yes·h - w_no·h at the last token (`--convert classify` with `method=from_2_way_softmax`), so
  `POST /classify` returns probs = [sigmoid(z_yes - z_no)] = [P(Yes)] per prompt. Prefix caching works
  for last-token pooling, so the candidates of one user reuse the user's prefix KV blocks. Start it with
  `model_store.llm.export.vllm_serve_command` or, by hand:

      python -m vllm.entrypoints.openai.api_server --model DIR --runner pooling --convert classify \\
        --enable-prefix-caching --hf-overrides '{"architectures": ["LlamaForSequenceClassification"],
        "classifier_from_token": ["ĠNo", "ĠYes"], "method": "from_2_way_softmax"}'

* `completions`: vLLM runs as a plain generator; `POST /v1/completions` with `max_tokens=1`,
  `logprobs=2` and `logprob_token_ids=[yes_id, no_id]` (vLLM >= 0.32: logprobs of exactly those ids,
  computed from the raw logits before sampling) gives lp_yes, lp_no, and
  P(Yes) = exp(lp_yes) / (exp(lp_yes) + exp(lp_no)) = sigmoid(lp_yes - lp_no): the same number, because
  the log-softmax normaliser cancels.

The request bodies are small pydantic models mirroring vLLM's `ClassificationCompletionRequest` and
`CompletionRequest`; the response models keep only the fields we read. Score: BinLLM (Zhang et al., ACL 2024).

Several replicas (`BINLLM_VLLM__BASE_URL=http://a:8000,http://b:8000`): each request goes to the replica its
user prefix hashes to (`routing.py`), so a user's candidates meet the prefix cache that user filled; a replica
that refuses connections is skipped and the request goes to the next one on the ring.

    BINLLM_BACKEND=vllm BINLLM_VLLM__BASE_URL=http://127.0.0.1:8001 uvicorn app.main:app
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app import metrics
from app.errors import (
    BackendResponseError,
    BackendUnavailableError,
    BinllmError,
    OverloadedError,
    SnapshotMissingError,
)
from app.scorers.base import PromptGroup
from app.scorers.routing import Replicas, Resolver, resolve_addresses
from app.scorers.served_model import CannotCheckError, answer_token_problems
from app.settings import ServerSettings, VllmSettings, pool_size
from model_store.contract.snapshot import ModelManifest

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({502, 503, 504})
PROBE_TIMEOUT_S = 0.8  # readiness probes answer within about 1 s, whatever vLLM does
PROBE_CACHE_S = 2.0
MODEL_RECHECK_S = 30.0  # a served model found wrong is asked again after this  # probes hitting /readyz often cost one tiny scoring call per 2 s
_PROBE = PromptGroup(prefix="Readiness probe. Answer Yes or No.", suffixes=(" #Answer:",))
_BACKOFF_S = 0.05  # first retry after 50 ms, then 100 ms, 200 ms...
_ResponseT = TypeVar("_ResponseT", bound=BaseModel)


class _Lenient(BaseModel):
    """Response types ignore fields they do not read, so newer vLLM versions still parse."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class ClassifyRequest(BaseModel):
    """Body of `POST /classify` (vLLM `ClassificationCompletionRequest`): every prompt of a request at once.

    `use_activation=True` asks for the sigmoid of the single (yes - no) logit rather than the raw margin.
    `add_special_tokens=True` is vLLM's default and what `tokenizer(prompt)` does in the local scorer.
    """

    model: str
    input: list[str]
    use_activation: bool = True
    add_special_tokens: bool = True

    @classmethod
    def for_prompts(cls, model: str, prompts: Sequence[str]) -> ClassifyRequest:
        """The one request that scores `prompts`."""
        return cls(model=model, input=list(prompts))


class ClassificationData(_Lenient):
    """One prompt's result; `probs` has one element for a from_2_way_softmax classifier."""

    index: int
    probs: list[float]
    num_classes: int


class ClassifyResponse(_Lenient):
    """`ClassificationResponse` of vLLM, the fields we read."""

    model: str
    data: list[ClassificationData]

    def yes_probabilities(self, n_prompts: int) -> list[float]:
        """P(Yes) per prompt in request order; BackendResponseError if the answer is not one prob each."""
        rows = sorted(self.data, key=lambda row: row.index)
        if [row.index for row in rows] != list(range(n_prompts)):
            raise BackendResponseError(f"/classify answered {len(rows)} rows for {n_prompts} prompts")
        if any(row.num_classes != 1 or len(row.probs) != 1 for row in rows):
            raise BackendResponseError(
                "/classify returned more than one class: start vLLM with "
                "method=from_2_way_softmax and classifier_from_token=[No, Yes]"
            )
        return [row.probs[0] for row in rows]


class CompletionsRequest(BaseModel):
    """Body of `POST /v1/completions` (vLLM `CompletionRequest`) asking only for the Yes/No logprobs.

    One greedy token is generated (vLLM needs at least one step to compute next-token logprobs);
    `logprob_token_ids` makes vLLM report exactly these two ids (vLLM requires `logprobs` to be set
    alongside), and `return_tokens_as_token_ids` keys them as "token_id:N" so they are matched by id,
    never by their decoded text.
    """

    model: str
    prompt: list[str]
    max_tokens: Literal[1] = 1
    temperature: float = 0.0
    logprobs: Literal[2] = 2
    logprob_token_ids: list[int] = Field(min_length=2, max_length=2)
    return_tokens_as_token_ids: Literal[True] = True
    add_special_tokens: bool = True

    @classmethod
    def for_prompts(cls, model: str, prompts: Sequence[str], yes_id: int, no_id: int) -> CompletionsRequest:
        """The one request that scores `prompts` with the Yes/No token ids of the served tokenizer."""
        return cls(model=model, prompt=list(prompts), logprob_token_ids=[yes_id, no_id])


class CompletionLogProbs(_Lenient):
    """Per generated token, the requested logprobs keyed by "token_id:N"."""

    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionChoice(_Lenient):
    """One prompt's completion (n=1, so choice index = prompt index)."""

    index: int
    logprobs: CompletionLogProbs | None = None


class CompletionsResponse(_Lenient):
    """`CompletionResponse` of vLLM, the fields we read."""

    model: str
    choices: list[CompletionChoice]

    def yes_probabilities(self, n_prompts: int, yes_id: int, no_id: int) -> list[float]:
        """sigmoid(lp_yes - lp_no) per prompt, in request order."""
        rows = sorted(self.choices, key=lambda choice: choice.index)
        if [row.index for row in rows] != list(range(n_prompts)):
            raise BackendResponseError(
                f"/v1/completions answered {len(rows)} choices for {n_prompts} prompts"
            )
        yes_key, no_key = f"token_id:{yes_id}", f"token_id:{no_id}"
        scores = []
        for row in rows:
            first = row.logprobs.top_logprobs[0] if row.logprobs and row.logprobs.top_logprobs else None
            if not first or yes_key not in first or no_key not in first:
                raise BackendResponseError(f"/v1/completions gave no logprobs for {yes_key} and {no_key}")
            scores.append(_sigmoid(first[yes_key] - first[no_key]))
        return scores


class ModelCard(_Lenient):
    """One entry of `GET /v1/models`."""

    id: str


class ModelsResponse(_Lenient):
    """`GET /v1/models`."""

    data: list[ModelCard]


def _sigmoid(x: float) -> float:
    """1 / (1 + e^-x) without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class VllmScorer:
    """Scores prompts with a remote vLLM server; one pooled `httpx.AsyncClient` per scorer.

    Connection errors and 502/503/504 are retried `settings.max_retries` times with a short exponential
    backoff (vLLM restarting or a proxy in front of it); then BackendUnavailableError (-> 503 + Retry-After).
    A read timeout is not retried: the server is alive but overloaded, and a retry would add load.
    A call waits up to `pool_wait_s` for a pooled connection when all are in use (the read timeout starts
    only once it has one), then OverloadedError (503 `overloaded`): our own queue, not vLLM's failure.
    """

    name = "vllm"

    def __init__(
        self,
        settings: VllmSettings,
        manifest: ModelManifest | None = None,
        *,
        manifest_source: Callable[[], ModelManifest | None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver = resolve_addresses,
        pool_wait_s: float = 2.0,
    ) -> None:
        if not settings.base_url:
            raise ValueError("VllmScorer needs settings.base_url")
        self._settings = settings
        self._manifest_source = manifest_source or (lambda: manifest)
        self._probe: tuple[float, bool] | None = None  # (when, result) of the last readiness probe
        self._replica_ready: dict[str, bool] = {}  # per replica, at the last probe
        self._checked: tuple[str, float, list[str]] | None = None  # (model_version, when, problems)
        self._check_lock = asyncio.Lock()
        self._model: str | None = settings.model
        self._model_lock = asyncio.Lock()
        headers = {}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"

        connections = settings.max_connections or pool_size(ServerSettings().limit_concurrency)

        def make_client(url: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=url,
                headers=headers,
                timeout=httpx.Timeout(
                    settings.timeout_s, connect=settings.connect_timeout_s, pool=pool_wait_s
                ),
                limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
                transport=transport,
            )

        self._replicas = Replicas(
            settings.base_url, make_client, resolve=settings.resolve_replicas, resolver=resolver
        )

    async def score(self, groups: Sequence[PromptGroup], *, replica: str | None = None) -> list[list[float]]:
        """All prompts of all groups in one vLLM call (to `replica` only, when given); scores split back
        per group."""
        prompts = [prompt for group in groups for prompt in group.prompts()]
        if not prompts:
            return [[] for _ in groups]
        await self.check_served_model()
        model = await self.model_name()
        route = groups[0].route or groups[0].prefix  # the user: their prefix is in that replica's cache
        if self._settings.mode == "classify":
            body = ClassifyRequest.for_prompts(model, prompts)
            reply = await self._post("/classify", body, route, replica)
            flat = _parse(ClassifyResponse, reply).yes_probabilities(len(prompts))
        else:
            served = self._manifest_source()  # the active snapshot's model, so a publish needs no restart
            if served is None:  # nothing published yet
                raise SnapshotMissingError("mode=completions needs the model manifest's Yes/No token ids")
            yes_id, no_id = served.yes_token_id, served.no_token_id
            body_c = CompletionsRequest.for_prompts(model, prompts, yes_id, no_id)
            reply = await self._post("/v1/completions", body_c, route, replica)
            flat = _parse(CompletionsResponse, reply).yes_probabilities(len(prompts), yes_id, no_id)
        out, start = [], 0
        for group in groups:
            out.append(flat[start : start + len(group.suffixes)])
            start += len(group.suffixes)
        return out

    async def model_name(self) -> str:
        """settings.model, or the server's only model, asked once from GET /v1/models."""
        if self._model is not None:
            return self._model
        async with self._model_lock:
            if self._model is None:
                cards = _parse(ModelsResponse, await self._request("GET", "/v1/models")).data
                if len(cards) != 1:
                    raise BackendResponseError(
                        f"vLLM serves {len(cards)} models; set BINLLM_VLLM__MODEL to one of them"
                    )
                self._model = cards[0].id
        return self._model

    async def check_served_model(self) -> None:
        """BackendResponseError when the server's tokenizer does not match the active snapshot's model.

        Checked once per snapshot model (so a publish is checked by the next request, no restart), a
        mismatch again after MODEL_RECHECK_S (vLLM may be redeployed with the right model).
        """
        served = self._manifest_source()
        if served is None:
            return
        if self._needs_check(served):
            async with self._check_lock:
                if self._needs_check(served):
                    problems = await self._served_model_problems(served)
                    self._checked = (served.model_version, time.monotonic(), problems)
        if self._checked is not None and self._checked[2]:
            raise BackendResponseError(
                f"vLLM does not serve snapshot model {served.model_version}: " + "; ".join(self._checked[2])
            )

    def _needs_check(self, served: ModelManifest) -> bool:
        checked = self._checked
        if checked is None or checked[0] != served.model_version:
            return True
        return bool(checked[2]) and time.monotonic() - checked[1] > MODEL_RECHECK_S

    async def _served_model_problems(self, served: ModelManifest) -> list[str]:
        try:
            problems = await answer_token_problems(self._request, await self.model_name(), served)
        except (BackendResponseError, CannotCheckError) as exc:  # e.g. 404: no /detokenize to ask
            logger.warning(
                "cannot check vLLM's model against snapshot model %s: %s", served.model_version, exc
            )
            return []
        if problems:
            logger.error(
                "vLLM does not serve snapshot model %s: %s", served.model_version, "; ".join(problems)
            )
        else:
            logger.info("vLLM serves the Yes/No tokens of snapshot model %s", served.model_version)
        return problems

    async def start(self) -> None:
        """Probe the server once, so the log says at start-up whether it scores (never fatal)."""
        if not await self.ready():
            logger.warning("vLLM does not score yet; /readyz reports it (the fallback answers meanwhile)")

    async def ready(self) -> bool:
        """Every replica probed at once with a real, tiny scoring call (an answer with a probability within
        PROBE_TIMEOUT_S); ready when at least one passes. Cached PROBE_CACHE_S. A failing replica counts a
        failure towards its ejection, a passing one comes back into rotation; `replica_report()` says which.

        vLLM's own `/health` says 200 while `/classify` errors, answers garbage or hangs, so it is not asked.
        """
        now = time.monotonic()
        if self._probe is not None and now - self._probe[0] < PROBE_CACHE_S:
            return self._probe[1]
        urls = list(self._replicas.ring.replicas)
        results = await asyncio.gather(*(self._probe_replica(url) for url in urls))
        self._replica_ready = dict(zip(urls, results, strict=True))
        for url, ok in self._replica_ready.items():
            metrics.BACKEND_REPLICA_READY.labels(url).set(1 if ok else 0)
        ok = any(results)
        self._probe = (time.monotonic(), ok)
        return ok

    async def _probe_replica(self, url: str) -> bool:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                (scores,) = await self.score([_PROBE], replica=url)
            passed = len(scores) == 1 and 0.0 <= scores[0] <= 1.0
        except (BinllmError, TimeoutError):
            passed = False
        if passed:
            self._replicas.ring.mark_up(url)
        else:
            self._replicas.ring.record_failure(url)
            logger.warning("vLLM replica %s fails its readiness probe", url)
        return passed

    def replica_report(self) -> dict[str, bool] | None:
        """Whether each replica passed the last readiness probe, by position in the replica list
        (`replica-0`, ...: no host names for clients; the log and `binllm_backend_replica_ready` name them);
        None with a single replica."""
        if len(self._replica_ready) < 2:
            return None
        return {f"replica-{k}": ok for k, ok in enumerate(self._replica_ready.values())}

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._replicas.aclose()

    async def _post(
        self, path: str, body: BaseModel, route: str, replica: str | None = None
    ) -> httpx.Response:
        return await self._request(
            "POST", path, json=body.model_dump(mode="json"), route=route, replica=replica
        )

    async def _request(
        self, method: str, path: str, *, json: Any = None, route: str = "", replica: str | None = None
    ) -> httpx.Response:
        """One call with bounded retries; every transport failure ends as BackendUnavailableError.

        Attempt k goes to the k-th replica in `route`'s ring order (ejected ones last), so a refused
        connection, a timeout, a 429 or a 5xx moves the request to the next replica at once (a timeout is
        retried only there, never on the replica that timed out); failures count towards ejecting a replica
        (`routing.py`); backoff only starts once every replica was tried. `replica` = that one only, no retry.
        """
        ring = self._replicas.ring
        order = [replica] if replica is not None else await self._replicas.order(route)
        attempts = 1 if replica is not None else self._settings.max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            another = not last and attempt + 1 < len(order)  # the next attempt goes to another replica
            url = order[attempt % len(order)]
            try:
                response = await self._replicas.client(url).request(method, path, json=json)
            except httpx.PoolTimeout as exc:
                raise OverloadedError(
                    f"no pooled vLLM connection to {url} freed up in time: {exc!r}",
                    public="the scoring backend is busy; retry shortly",
                ) from exc
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                ring.mark_down(url)
                if last:
                    raise BackendUnavailableError(f"vLLM unreachable at {url}: {exc}") from exc
            except httpx.TimeoutException as exc:  # alive but stuck: only another replica is worth a try
                ring.record_failure(url)
                if not another:
                    raise BackendUnavailableError(f"vLLM did not answer {path} in time: {exc!r}") from exc
            except httpx.HTTPError as exc:
                raise BackendUnavailableError(f"vLLM {path} failed: {exc!r}") from exc
            else:
                status = response.status_code
                if status == 429 or status >= 500:
                    ring.record_failure(url)
                if status in RETRY_STATUSES and not last:
                    pass
                elif (status == 429 or status >= 500) and another:
                    pass  # shedding load, or 500: the next replica may answer (never the same one again)
                elif status in RETRY_STATUSES or status == 429:
                    raise BackendUnavailableError(f"vLLM {path} answered {status}")
                elif response.is_error:
                    raise BackendResponseError(f"vLLM {path} answered {status}: {response.text[:500]}")
                else:
                    ring.mark_up(url)
                    return response
            logger.info("vLLM %s %s: retry %d of %d", method, path, attempt + 1, attempts - 1)
            if attempt + 1 >= len(order):  # every replica tried: give them a moment
                await asyncio.sleep(_BACKOFF_S * 2 ** (attempt + 1 - len(order)))
        raise AssertionError("unreachable: the last attempt returns or raises")


def _parse(model: type[_ResponseT], response: httpx.Response) -> _ResponseT:
    """Validate a vLLM reply with its protocol type; anything else is the backend's fault (502)."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise BackendResponseError(f"vLLM answered an unexpected {model.__name__}: {exc}") from exc
