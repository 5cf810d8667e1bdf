"""The cascade under the deadline: what fits is estimated from measured throughput, the LLM takes the best
candidates by code score first, and every item says which score it got (a real DirectoryStore on tmp_path,
a recording scorer that takes a fixed time per candidate)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from app import metrics
from app.cascade import ThroughputMeter, cascade_order, codes_below, llm_budget
from app.schemas import PredictRequest
from app.scorers.base import PromptGroup
from app.service import PredictService, ServingPolicy
from app.store.directory import DirectoryStore
from model_store.contract.fusion import CodeScore, ScoreFusion, sigmoid
from model_store.publish.directory import DirectoryPublisher
from tests.unit.app.conftest import ITEMS, USERS, RecordingScorer, make_snapshot

CODES = CodeScore(bits=32, scale=0.1, bias=-0.5, unknown_user_code=0xAAAA0000, unknown_item_code=0x0000AAAA)
FUSION = ScoreFusion(codes=CODES, warm=(0.7, 1.5, 0.2), cold=(1.1, 0.4, -0.5), fitted_on="valid_small")
ALL = ["i1", "i2", "i3", "h1", "h2"]


class PerCandidateScorer(RecordingScorer):
    """Pseudo-scores that take `seconds_per_candidate` for each candidate of a call."""

    def __init__(self, seconds_per_candidate: float) -> None:
        super().__init__()
        self.seconds_per_candidate = seconds_per_candidate

    async def score(self, groups: Sequence[PromptGroup]) -> list[list[float]]:
        """Sleep for the call's candidates, then score."""
        await asyncio.sleep(self.seconds_per_candidate * sum(len(g.suffixes) for g in groups))
        return await super().score(groups)


def code_order(user: str = "u1") -> list[str]:
    """The candidates by the codes' own probability, best first."""
    p = {i: sigmoid(CODES.logit(USERS[user].code, ITEMS[i].code)) for i in ALL}
    return sorted(ALL, key=lambda i: -p[i])


def predict(root: Path, scorer: Any, policy: ServingPolicy, items: list[str] = ALL) -> Any:
    async def go() -> Any:
        store = DirectoryStore(root)
        await store.open()
        try:
            service = PredictService(store, scorer, max_candidates=256, policy=policy)
            return await service.predict(PredictRequest(user_id="u1", item_ids=items))
        finally:
            await store.aclose()

    return asyncio.run(go())


def publish(tmp_path: Path, fusion: ScoreFusion | None = None) -> Path:
    root = tmp_path / "snapshots"
    DirectoryPublisher(root).publish(make_snapshot(code_score=CODES, fusion=fusion))
    return root


def test_the_budget_is_what_the_measured_rate_scores_in_the_safe_share_of_the_time_left() -> None:
    assert llm_budget(256, None, 50.0, 0.75) == 256  # no deadline: everything
    assert llm_budget(256, 10.0, None, 0.75) == 256  # nothing measured yet: try everything
    assert llm_budget(256, 2.0, 100.0, 0.75) == 150
    assert llm_budget(100, 2.0, 100.0, 0.75) == 100
    assert llm_budget(256, 0.005, 100.0, 0.75) == 0
    assert llm_budget(256, -1.0, 100.0, 0.75) == 0


def test_the_meter_reports_candidates_per_second_over_its_last_calls() -> None:
    meter = ThroughputMeter(window=2)
    assert meter.rate() is None
    meter.record(100, 10.0)  # slow, then dropped from the window
    meter.record(30, 1.0)
    meter.record(10, 1.0)
    assert meter.rate() == pytest.approx(20.0)


def test_the_cascade_order_is_best_code_score_first_ties_in_request_order() -> None:
    assert cascade_order({"a": 0.2, "b": 0.9, "c": 0.2, "d": 0.5}) == ["b", "d", "a", "c"]
    assert codes_below(0.5, 0.4) == pytest.approx(0.2) and codes_below(0.99, 0.4) < 0.4


def test_a_request_that_fits_is_scored_whole_by_the_llm(tmp_path: Path) -> None:
    answer = predict(publish(tmp_path), RecordingScorer(), ServingPolicy(deadline_s=5.0, chunk_candidates=2))
    assert answer.degraded is None and answer.score_kind == "p_yes"
    assert [s.score_kind for s in answer.scores] == ["p_yes"] * 5
    assert all(s.p_yes == s.score for s in answer.scores)


def test_the_llm_scores_the_best_codes_that_fit_and_the_rest_rank_below_by_their_codes(
    tmp_path: Path,
) -> None:
    partial_before = metrics.ANSWERS.labels("partial")._value.get()
    scorer = PerCandidateScorer(0.1)
    answer = predict(publish(tmp_path), scorer, ServingPolicy(deadline_s=0.35, chunk_candidates=1))
    assert answer.degraded == "llm_partial" and answer.score_kind == "p_yes"
    by_id = {s.item_id: s for s in answer.scores}
    llm = [i for i in ALL if by_id[i].score_kind == "p_yes"]
    codes_only = [i for i in ALL if by_id[i].score_kind == "codes"]
    assert 1 <= len(llm) < len(ALL) and len(llm) + len(codes_only) == len(ALL)
    order = code_order()
    assert set(llm) == set(order[: len(llm)])  # the head of the codes' ranking, nothing skipped
    for k, call in enumerate(scorer.calls):  # one candidate per call, in the codes' order
        assert ITEMS[order[k]].title in call[0].suffixes[0]
    assert all(by_id[i].p_yes == by_id[i].score for i in llm)
    assert all(by_id[i].p_yes is None for i in codes_only)
    # without a blend, every LLM-scored item ranks above every codes-only one, which keep the codes' order
    assert min(by_id[i].score for i in llm) > max(by_id[i].score for i in codes_only)
    tail = sorted(codes_only, key=lambda i: -by_id[i].score)
    assert tail == [i for i in order if i in codes_only]
    assert metrics.ANSWERS.labels("partial")._value.get() == partial_before + 1


def test_with_a_blend_codes_only_items_keep_the_codes_own_probability(tmp_path: Path) -> None:
    answer = predict(
        publish(tmp_path, FUSION),
        PerCandidateScorer(0.1),
        ServingPolicy(deadline_s=0.35, chunk_candidates=1),
    )
    assert answer.degraded == "llm_partial" and answer.score_kind == "blend"
    kinds = {s.score_kind for s in answer.scores}
    assert kinds == {"blend", "codes"}
    for s in answer.scores:
        if s.score_kind == "codes":
            assert s.score == sigmoid(CODES.logit(USERS["u1"].code, ITEMS[s.item_id].code))


def test_nothing_in_time_is_the_code_only_answer_counted_as_such(tmp_path: Path) -> None:
    before = metrics.ANSWERS.labels("codes_only")._value.get()
    answer = predict(publish(tmp_path), PerCandidateScorer(1.0), ServingPolicy(deadline_s=0.05))
    assert (answer.degraded, answer.score_kind) == ("llm_deadline", "codes")
    assert {s.score_kind for s in answer.scores} == {"codes"}
    assert metrics.ANSWERS.labels("codes_only")._value.get() == before + 1


def test_a_measured_slow_backend_is_not_even_asked_when_nothing_would_fit(tmp_path: Path) -> None:
    root = publish(tmp_path)
    scorer = PerCandidateScorer(0.02)

    async def go() -> Any:
        store = DirectoryStore(root)
        await store.open()
        service = PredictService(store, scorer, max_candidates=256, policy=ServingPolicy(deadline_s=0.05))
        service.meter.record(1, 10.0)  # measured: 0.1 candidates/s
        try:
            return await service.predict(PredictRequest(user_id="u1", item_ids=ALL))
        finally:
            await store.aclose()

    answer = asyncio.run(go())
    assert answer.degraded == "llm_deadline" and scorer.calls == []
