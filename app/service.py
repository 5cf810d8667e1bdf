"""predict(): store lookup -> prompts -> scorer -> response. No HTTP here; errors are `app.errors` types.

One request: check the candidate limit, look up the user and every distinct candidate and history id in
one store call, render one user prefix per wording (BinLLM with codes, or text-only) and one suffix per
distinct candidate, score the groups, and lay the scores out in request order. The BinLLM wording (Zhang et
al., ACL 2024) needs the user code, the item code and a model tuned with codes; anything else is scored with
the text-only wording (cold start), or, when the model's style says `unknown_codes="learned"`, with the
learned unknown code in place of the missing one; either way it is reported in `cold`. When the model
manifest declares a `fusion` (contract/fusion.py), each `score` is the logistic blend of P(Yes) and the
code score, with the warm weights for a candidate prompted with both own codes and the cold weights for one
listed in `cold`, exactly as `binllm llm eval` computes it; `p_yes` always keeps the LLM's own P(Yes).

Serving policy (`ServingPolicy`): candidates are admitted against a queue cap (`app/admission.py`, 503 beyond
it); scoring must finish by the request's deadline; a backend with `chunk_candidates` set (the in-process
model) is fed at most that many candidates per call, so a small request queued behind a large one waits for one
chunk, not the whole request, and a request abandoned by its client (cancelled) stops at the next chunk.
With the fallback on and a code score published, scoring is a cascade (`app/cascade.py`): the codes score
every candidate, the LLM the best of them by code score that fit before the deadline, the rest keep their
code score (`degraded: "llm_partial"`, `score_kind` per item). When the backend is down, erroring, or scores
nothing in time, the answer is the code-only score (`app/fallback.py`) marked `degraded`, unless the fallback
is off: then 503 (unavailable), 502 (bad answer) or 504 (deadline).

    python -c "from app.service import plan_prompts; help(plan_prompts)"
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from app import metrics
from app.admission import Admission
from app.cascade import ThroughputMeter, cascade_order, codes_below, score_head
from app.errors import (
    BackendResponseError,
    BackendUnavailableError,
    DeadlineExceededError,
    InvalidRequestError,
    UnknownItemsError,
    redact,
)
from app.fallback import code_only_response, code_probabilities, degraded_reason
from app.readiness import check_readiness
from app.schemas import ItemScore, PredictRequest, PredictResponse, ReadyResponse
from app.scorers.base import PromptGroup, Scorer
from app.store.base import CatalogLookup, CatalogStore, history_titles
from model_store.contract.fusion import CodeScore, ScoreFusion
from model_store.contract.prompts import (
    CandidateItem,
    PromptStyle,
    UserContext,
    fill_unknown,
    has_feature,
    render_candidate_suffix,
    render_user_prefix,
)
from model_store.contract.snapshot import ModelManifest, UnknownEmbeddings

logger = logging.getLogger(__name__)
Side = TypeVar("Side", UserContext, CandidateItem)


@dataclass(frozen=True)
class PromptPlan:
    """The prompt groups of one request and where each distinct candidate's score will be."""

    groups: list[PromptGroup]
    slots: dict[str, tuple[int, int]]  # item_id -> (group index, suffix index)
    cold: list[str]
    cold_reason: str | None  # "model", "user" or "item" (the latter when only some items lack codes)


def plan_prompts(
    user: UserContext,
    items: dict[str, CandidateItem],
    model: ModelManifest,
    code_score: CodeScore | None = None,
    unknown_embeddings: UnknownEmbeddings | None = None,
) -> PromptPlan:
    """Group distinct candidates by wording so each group shares one user prefix.

    Codes are used only when the model was tuned with them and both the user and the item have one, or,
    when the model's style says `unknown_codes="learned"`, the snapshot's learned unknown code stands in
    for a missing one. Candidates without a code of their own are listed in `cold` either way. A CoLLM
    model (encoding 'embeddings') reads each side's CF embedding instead, with the snapshot's learned unknown
    embedding standing in the same way (`unknown_embeddings`).
    """
    style = model.prompt_style
    unknown = code_score if style.unknown_codes == "learned" else None
    unknown_soft = unknown_embeddings if unknown is not None and style.encoding == "embeddings" else None
    user_known = has_feature(user, style)
    if unknown is not None:
        user = with_unknown(
            user, unknown.unknown_user_code, unknown_soft.user if unknown_soft else None, style
        )
    warm_ok = model.with_codes and has_feature(user, style)
    suffixes: dict[bool, list[str]] = {True: [], False: []}
    where: dict[str, tuple[bool, int]] = {}
    cold: list[str] = []
    for item_id, item in items.items():
        if not (model.with_codes and user_known and has_feature(item, style)):
            cold.append(item_id)
        if unknown is not None:
            item = with_unknown(
                item, unknown.unknown_item_code, unknown_soft.item if unknown_soft else None, style
            )
        codes = warm_ok and has_feature(item, style)
        where[item_id] = (codes, len(suffixes[codes]))
        suffixes[codes].append(render_candidate_suffix(item, style, with_codes=codes))
    groups: list[PromptGroup] = []
    group_index: dict[bool, int] = {}
    for codes in (True, False):
        if suffixes[codes]:
            group_index[codes] = len(groups)
            prefix = render_user_prefix(user, style, with_codes=codes)
            groups.append(PromptGroup(prefix=prefix, suffixes=tuple(suffixes[codes])))
    slots = {item_id: (group_index[codes], pos) for item_id, (codes, pos) in where.items()}
    reason = None if not cold else "model" if not model.with_codes else "user" if not user_known else "item"
    return PromptPlan(groups=groups, slots=slots, cold=cold, cold_reason=reason)


def with_unknown(side: Side, code: int, embedding: str | None, style: PromptStyle) -> Side:
    """`side` with the learned unknown code (and, for a CoLLM model, embedding) standing in for a missing
    one: one copy per candidate on the request path."""
    update: dict[str, object] = {"code": fill_unknown(side.code, code, style)}
    if embedding is not None:
        update["embedding"] = fill_unknown(side.embedding, embedding, style)
    return side.model_copy(update=update)


def _check_scores(groups: Sequence[PromptGroup], scores: list[list[float]], backend: str) -> None:
    if len(scores) != len(groups) or any(
        len(s) != len(g.suffixes) for s, g in zip(scores, groups, strict=False)
    ):
        raise BackendResponseError(f"backend {backend!r} returned scores that do not match the prompts")
    if not all(0.0 <= x <= 1.0 for group in scores for x in group):  # also refuses NaN
        raise BackendResponseError(f"backend {backend!r} returned a score outside [0, 1]")


def _item_score(
    item_id: str,
    p_yes: float,
    user: UserContext,
    item: CandidateItem,
    warm: bool,
    fusion: ScoreFusion | None,
) -> ItemScore:
    """One candidate's served score: P(Yes) itself, or the manifest's blend of it with the code score.

    The blend takes whether the candidate is warm (prompted with both own codes, not listed in `cold`;
    warm and cold weights were fitted separately) and the store's codes as they are (None = unknown code),
    the same inputs the offline evaluation feeds it, so served and evaluated scores agree.
    """
    if fusion is None:
        return ItemScore(item_id=item_id, score=p_yes, p_yes=p_yes, score_kind="p_yes")
    score = fusion.blend(p_yes, user.code, item.code, warm=warm)
    return ItemScore(item_id=item_id, score=score, p_yes=p_yes, score_kind="blend")


@dataclass(frozen=True)
class ServingPolicy:
    """How requests are admitted, bounded in time, chunked and degraded (from the settings)."""

    max_candidates: int = 256
    fallback: bool = True
    deadline_s: float | None = None
    chunk_candidates: int | None = None
    max_queued_candidates: int | None = None
    readiness_timeout_s: float = 1.0
    cascade_safety: float = 0.75


def chunk_groups(groups: Sequence[PromptGroup], size: int | None) -> list[list[PromptGroup]]:
    """The groups cut into calls of at most `size` suffixes each (one call when `size` is None)."""
    if size is None:
        return [list(groups)]
    calls: list[list[PromptGroup]] = []
    for group in groups:
        for start in range(0, len(group.suffixes), size):
            calls.append([PromptGroup(group.prefix, group.suffixes[start : start + size], group.route)])
    return calls


class PredictService:
    """The request logic, bound to one store and one scorer (built in `app.main`'s lifespan)."""

    def __init__(
        self, store: CatalogStore, scorer: Scorer, *, max_candidates: int, policy: ServingPolicy | None = None
    ) -> None:
        self.store = store
        self.scorer = scorer
        self.policy = policy or ServingPolicy(max_candidates=max_candidates)
        self.max_candidates = max_candidates
        self.admission = Admission(self.policy.max_queued_candidates)
        self.meter = ThroughputMeter()  # the backend's recent candidates/s, for the cascade's estimates

    async def predict(self, request: PredictRequest) -> PredictResponse:
        """Scores for `request.item_ids`, in request order (duplicates scored once, reported each time)."""
        n = len(request.item_ids)
        if n > self.max_candidates:
            raise InvalidRequestError(
                f"item_ids holds {n} ids; at most {self.max_candidates} are allowed", param="item_ids"
            )
        metrics.CANDIDATES.observe(n)
        with self.admission.admit(n):
            return await self._predict(request)

    async def _predict(self, request: PredictRequest) -> PredictResponse:
        deadline_s = self.policy.deadline_s
        deadline = None if deadline_s is None else asyncio.get_running_loop().time() + deadline_s
        candidates = list(dict.fromkeys(request.item_ids))
        history = request.history_item_ids
        lookup = await self.store.lookup(
            request.user_id, list(dict.fromkeys([*candidates, *(history or [])]))
        )
        unknown = [i for i in candidates if i not in lookup.items]
        if unknown:
            raise UnknownItemsError(unknown, param="item_ids")
        user = self._user_context(lookup, history)
        items = {
            i: CandidateItem(
                title=lookup.items[i].title, code=lookup.items[i].code, embedding=lookup.items[i].embedding
            )
            for i in candidates
        }
        plan = plan_prompts(
            user, items, lookup.manifest.model, lookup.manifest.code_score, lookup.manifest.unknown_embeddings
        )
        if plan.cold_reason is not None:
            metrics.COLD_STARTS.labels(plan.cold_reason).inc(len(plan.cold))
        groups = [replace(g, route=request.user_id) for g in plan.groups]
        # the cascade needs the codes' score of every candidate; with the fallback off it is all or 504
        code_p = code_probabilities(lookup.manifest, user, items) if self.policy.fallback else None
        try:
            if code_p is None:
                scores = await self._score(groups, deadline)
                p_yes = {item_id: scores[g][k] for item_id, (g, k) in plan.slots.items()}
            else:
                p_yes = await self._score_cascade(groups, plan, code_p, deadline)
        except (BackendUnavailableError, BackendResponseError, DeadlineExceededError) as exc:
            fallback = self.policy.fallback and code_only_response(
                lookup.manifest, list(request.item_ids), user, items, degraded_reason(exc)
            )
            if not fallback:
                raise
            logger.warning("degraded answer (%s): %s", fallback.degraded, redact(exc.message))
            return fallback
        return self._respond(request, lookup, user, items, plan, p_yes, code_p)

    @staticmethod
    def _respond(
        request: PredictRequest,
        lookup: CatalogLookup,
        user: UserContext,
        items: dict[str, CandidateItem],
        plan: PromptPlan,
        p_yes: dict[str, float],
        code_p: dict[str, float] | None,
    ) -> PredictResponse:
        """LLM-scored items as P(Yes) or the blend; the rest (a partial answer) by their codes, on the blend's
        scale when there is one, else ranked below every LLM-scored item (`app/cascade.py`)."""
        fusion = lookup.manifest.model.fusion
        cold = set(plan.cold)
        by_id = {
            item_id: _item_score(item_id, p, user, items[item_id], item_id not in cold, fusion)
            for item_id, p in p_yes.items()
        }
        rest = [item_id for item_id in plan.slots if item_id not in by_id]
        if rest and code_p is not None:
            lowest = min(score.score for score in by_id.values())
            for item_id in rest:
                p = code_p[item_id] if fusion is not None else codes_below(code_p[item_id], lowest)
                by_id[item_id] = ItemScore(item_id=item_id, score=p, p_yes=None, score_kind="codes")
        metrics.ANSWERS.labels("partial" if rest else "full").inc()
        return PredictResponse(
            model_version=lookup.manifest.model.model_version,
            code_version=lookup.manifest.code_version,
            scores=[by_id[i] for i in request.item_ids],
            cold=plan.cold,
            score_kind="p_yes" if fusion is None else "blend",
            degraded="llm_partial" if rest else None,
        )

    @staticmethod
    def _user_context(lookup: CatalogLookup, history: list[str] | None) -> UserContext:
        """The user's code from the store; titles from the request's history ids if given, else stored."""
        code = lookup.user.code if lookup.user is not None else None
        embedding = lookup.user.embedding if lookup.user is not None else None
        if history is None:
            return UserContext(history_titles=history_titles(lookup), code=code, embedding=embedding)
        unknown = [i for i in dict.fromkeys(history) if i not in lookup.items]
        if unknown:
            raise UnknownItemsError(unknown, param="history_item_ids")
        titles = tuple(lookup.items[i].title for i in history)
        return UserContext(history_titles=titles, code=code, embedding=embedding)

    async def _score(self, groups: list[PromptGroup], deadline: float | None) -> list[list[float]]:
        """Scores per group, fed to the backend in chunks, all of it by `deadline` (loop time)."""
        start = time.perf_counter()
        parts: list[list[float]] = []
        try:
            async with asyncio.timeout_at(deadline):
                for call in chunk_groups(groups, self.policy.chunk_candidates):
                    scores = await self.scorer.score(call)
                    _check_scores(call, scores, self.scorer.name)
                    parts.extend(scores)
        except TimeoutError as exc:
            raise DeadlineExceededError(
                f"backend {self.scorer.name!r} did not answer within {self.policy.deadline_s} s"
            ) from exc
        finally:
            metrics.BACKEND_SECONDS.labels(self.scorer.name).observe(time.perf_counter() - start)
        out: list[list[float]] = []
        chunks = iter(parts)
        for group in groups:  # chunks come back in group order; stitch each group's back together
            flat: list[float] = []
            while len(flat) < len(group.suffixes):
                flat.extend(next(chunks))
            out.append(flat)
        return out

    async def _score_cascade(
        self, groups: list[PromptGroup], plan: PromptPlan, code_p: dict[str, float], deadline: float | None
    ) -> dict[str, float]:
        """P(Yes) of the best candidates by code score that the LLM scores by `deadline` (at least one, or
        DeadlineExceededError)."""

        async def checked(call: list[PromptGroup]) -> list[list[float]]:
            scores = await self.scorer.score(call)
            _check_scores(call, scores, self.scorer.name)
            return scores

        start = time.perf_counter()
        try:
            p_yes = await score_head(
                cascade_order(code_p),
                plan.slots,
                groups,
                checked,
                chunk=self.policy.chunk_candidates,
                deadline=deadline,
                meter=self.meter,
                safety=self.policy.cascade_safety,
            )
        finally:
            metrics.BACKEND_SECONDS.labels(self.scorer.name).observe(time.perf_counter() - start)
        if not p_yes:
            raise DeadlineExceededError(
                f"backend {self.scorer.name!r} scored no candidate within {self.policy.deadline_s} s"
            )
        return p_yes

    async def readiness(self) -> ReadyResponse:
        """/readyz: see `app.readiness.check_readiness`."""
        return await check_readiness(
            self.store, self.scorer, fallback=self.policy.fallback, timeout_s=self.policy.readiness_timeout_s
        )
