"""PredictService over a real DirectoryStore (tmp_path) and a recording scorer: prompts, order, cold start."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from app.errors import BackendResponseError, InvalidRequestError, UnknownItemsError
from app.schemas import PredictRequest, PredictResponse
from app.scorers.instant import pseudo_score
from app.service import PredictService
from app.store.directory import DirectoryStore
from model_store.contract.fusion import CodeScore, ScoreFusion
from model_store.contract.prompts import CandidateItem, PromptStyle, UserContext, render_prompt
from model_store.publish.directory import DirectoryPublisher

STYLE = PromptStyle()
U1 = UserContext(history_titles=("Heat (1995)", "Ran (1985)"), code=0xF0F0F0F0)


def predict(root: Path, scorer: Any, max_candidates: int = 256, **body: Any) -> PredictResponse:
    """Open a store on `root`, run one prediction, close."""

    async def run() -> PredictResponse:
        store = DirectoryStore(root)
        await store.open()
        try:
            service = PredictService(store, scorer, max_candidates=max_candidates)
            return await service.predict(PredictRequest(**body))
        finally:
            await store.aclose()

    return asyncio.run(run())


def expected(user: UserContext, title: str, code: int | None, with_codes: bool) -> float:
    return pseudo_score(
        render_prompt(user, CandidateItem(title=title, code=code), STYLE, with_codes=with_codes)
    )


def test_scores_come_in_request_order_from_binllm_prompts(snapshot_dir: Path, scorer: Any) -> None:
    response = predict(snapshot_dir, scorer, user_id="u1", item_ids=["i2", "i1"])
    assert [s.item_id for s in response.scores] == ["i2", "i1"]
    assert [s.score for s in response.scores] == [
        expected(U1, "Jumanji (1995)", 0xFFFF0000, True),
        expected(U1, "Toy Story (1995)", 1, True),
    ]
    assert response.cold == []
    assert (response.model_version, response.code_version) == ("m-test", "c-test")


def test_all_candidates_of_one_wording_share_one_prefix_group(snapshot_dir: Path, scorer: Any) -> None:
    predict(snapshot_dir, scorer, user_id="u1", item_ids=["i1", "i2"])
    (groups,) = scorer.calls
    assert len(groups) == 1 and len(groups[0].suffixes) == 2
    assert "feature 11110000111100001111000011110000" in groups[0].prefix


def test_item_without_code_is_scored_text_only_and_reported_cold(snapshot_dir: Path, scorer: Any) -> None:
    response = predict(snapshot_dir, scorer, user_id="u1", item_ids=["i3", "i1"])
    assert response.cold == ["i3"]
    assert response.scores[0].score == expected(U1, "Brand New (2024)", None, False)
    assert response.scores[1].score == expected(U1, "Toy Story (1995)", 1, True)
    assert len(scorer.calls[0]) == 2  # one group per wording


def test_unknown_user_is_scored_cold_with_no_history(snapshot_dir: Path, scorer: Any) -> None:
    response = predict(snapshot_dir, scorer, user_id="stranger", item_ids=["i1", "i2"])
    assert response.cold == ["i1", "i2"]
    assert response.scores[0].score == expected(UserContext(), "Toy Story (1995)", 1, False)


def test_known_user_without_code_gets_text_only_prompt_with_stored_history(
    snapshot_dir: Path, scorer: Any
) -> None:
    response = predict(snapshot_dir, scorer, user_id="u2", item_ids=["i1"])
    user = UserContext(history_titles=("Alien (1979)",))
    assert response.cold == ["i1"]
    assert response.scores[0].score == expected(user, "Toy Story (1995)", 1, False)


def test_text_only_model_never_uses_codes(tmp_path: Path, scorer: Any, snapshot_factory: Any) -> None:
    DirectoryPublisher(tmp_path).publish(snapshot_factory(with_codes=False))
    response = predict(tmp_path, scorer, user_id="u1", item_ids=["i1"])
    assert response.cold == ["i1"]
    assert response.scores[0].score == expected(U1, "Toy Story (1995)", 1, False)


def test_history_item_ids_replace_stored_titles_from_the_catalogue(snapshot_dir: Path, scorer: Any) -> None:
    response = predict(snapshot_dir, scorer, user_id="u1", item_ids=["i1"], history_item_ids=["h2", "h1"])
    user = UserContext(history_titles=("Fargo (1996)", "Casino (1995)"), code=0xF0F0F0F0)
    assert response.scores[0].score == expected(user, "Toy Story (1995)", 1, True)


def test_unknown_items_raise_naming_each_unknown_id(snapshot_dir: Path, scorer: Any) -> None:
    with pytest.raises(UnknownItemsError) as info:
        predict(snapshot_dir, scorer, user_id="u1", item_ids=["i1", "nope", "i2", "gone", "nope"])
    assert info.value.ids == ["nope", "gone"]
    assert info.value.param == "item_ids" and "'nope'" in info.value.message
    assert scorer.calls == []


def test_unknown_history_ids_raise_naming_them(snapshot_dir: Path, scorer: Any) -> None:
    with pytest.raises(UnknownItemsError) as info:
        predict(snapshot_dir, scorer, user_id="u1", item_ids=["i1"], history_item_ids=["h1", "zz"])
    assert info.value.ids == ["zz"] and info.value.param == "history_item_ids"


def test_duplicate_ids_are_scored_once_and_reported_at_each_position(snapshot_dir: Path, scorer: Any) -> None:
    response = predict(snapshot_dir, scorer, user_id="u1", item_ids=["i1", "i2", "i1"])
    assert [s.item_id for s in response.scores] == ["i1", "i2", "i1"]
    assert response.scores[0].score == response.scores[2].score != response.scores[1].score
    assert len(scorer.calls[0][0].suffixes) == 2


def test_more_candidates_than_the_setting_allows_is_invalid(snapshot_dir: Path, scorer: Any) -> None:
    with pytest.raises(InvalidRequestError, match="at most 2"):
        predict(snapshot_dir, scorer, max_candidates=2, user_id="u1", item_ids=["i1", "i2", "i3"])


def test_backend_returning_too_few_scores_is_a_backend_error(snapshot_dir: Path, scorer: Any) -> None:
    scorer.wrong_count = True
    with pytest.raises(BackendResponseError):
        predict(snapshot_dir, scorer, user_id="u1", item_ids=["i1", "i2"])


# Warm and cold weights differ in every term, so using the wrong wording's weights changes the score.
FUSION = ScoreFusion(
    codes=CodeScore(bits=32, scale=0.05, bias=-0.3, unknown_user_code=0, unknown_item_code=0x0000FFFF),
    warm=(0.7, 1.5, 0.2),
    cold=(1.1, 0.4, -0.5),
    fitted_on="valid_small",
)


def by_hand(p_yes: float, inner: int, weights: tuple[float, float, float]) -> float:
    """sigmoid(w_llm * logit(P(Yes)) + w_code * (scale * <c_u, c_i> + bias) + b), written out."""
    w_llm, w_code, bias = weights
    z = w_llm * math.log(p_yes / (1.0 - p_yes)) + w_code * (0.05 * inner - 0.3) + bias
    return 1.0 / (1.0 + math.exp(-z))


def test_without_fusion_score_is_p_yes(snapshot_dir: Path, scorer: Any) -> None:
    response = predict(snapshot_dir, scorer, user_id="u1", item_ids=["i1", "i3"])
    assert response.score_kind == "p_yes"
    assert [s.p_yes for s in response.scores] == [
        expected(U1, "Toy Story (1995)", 1, True),
        expected(U1, "Brand New (2024)", None, False),
    ]
    assert all(s.score == s.p_yes for s in response.scores)


def test_fusion_in_the_manifest_blends_each_score_with_its_wordings_weights(
    tmp_path: Path, scorer: Any, snapshot_factory: Any
) -> None:
    DirectoryPublisher(tmp_path).publish(snapshot_factory(fusion=FUSION))
    response = predict(tmp_path, scorer, user_id="u1", item_ids=["i1", "i3", "i1"])
    assert response.score_kind == "blend" and response.cold == ["i3"]
    warm, cold, again = response.scores
    # i1 is warm: u1 0xF0F0F0F0 vs item 0x00000001 differ in 17 bits -> <c_u, c_i> = 32 - 34 = -2.
    assert warm.p_yes == expected(U1, "Toy Story (1995)", 1, True)
    assert warm.score == pytest.approx(by_hand(warm.p_yes, -2, FUSION.warm), rel=1e-12)
    assert warm.score == FUSION.blend(warm.p_yes, 0xF0F0F0F0, 1, warm=True)
    # i3 is cold with no code: the unknown item code 0x0000FFFF differs from u1 in 16 bits -> inner 0.
    assert cold.p_yes == expected(U1, "Brand New (2024)", None, False)
    assert cold.score == pytest.approx(by_hand(cold.p_yes, 0, FUSION.cold), rel=1e-12)
    assert cold.score == FUSION.blend(cold.p_yes, 0xF0F0F0F0, None, warm=False)
    assert warm.score != warm.p_yes and cold.score != cold.p_yes
    assert again == warm


def test_fusion_uses_cold_weights_and_the_unknown_user_code_for_a_codeless_user(
    tmp_path: Path, scorer: Any, snapshot_factory: Any
) -> None:
    DirectoryPublisher(tmp_path).publish(snapshot_factory(fusion=FUSION))
    response = predict(tmp_path, scorer, user_id="u2", item_ids=["i2"])
    (only,) = response.scores
    assert response.cold == ["i2"] and response.score_kind == "blend"
    assert only.p_yes == expected(
        UserContext(history_titles=("Alien (1979)",)), "Jumanji (1995)", 0xFFFF0000, False
    )
    # unknown user code 0 vs item 0xFFFF0000 differ in 16 bits -> inner 0.
    assert only.score == pytest.approx(by_hand(only.p_yes, 0, FUSION.cold), rel=1e-12)


CODE_SCORE = CodeScore(
    bits=32, scale=0.1, bias=0.0, unknown_user_code=0xAAAAAAAA, unknown_item_code=0x55555555
)
LEARNED = PromptStyle(unknown_codes="learned")


def test_learned_unknown_codes_stand_in_for_missing_ones_and_the_items_stay_listed_cold(
    tmp_path: Path, scorer: Any, snapshot_factory: Any
) -> None:
    DirectoryPublisher(tmp_path).publish(snapshot_factory(code_score=CODE_SCORE, prompt_style=LEARNED))
    response = predict(tmp_path, scorer, user_id="u1", item_ids=["i3", "i1"])
    assert response.cold == ["i3"]
    cold_prompt = render_prompt(
        U1, CandidateItem(title="Brand New (2024)", code=0x55555555), LEARNED, with_codes=True
    )
    assert response.scores[0].score == pseudo_score(cold_prompt)
    assert len(scorer.calls[0]) == 1  # one wording, so one shared prefix for both candidates
    codeless_user = predict(tmp_path, scorer, user_id="u2", item_ids=["i1"])
    user = UserContext(history_titles=("Alien (1979)",), code=0xAAAAAAAA)
    assert codeless_user.cold == ["i1"]
    assert codeless_user.scores[0].score == pseudo_score(
        render_prompt(user, CandidateItem(title="Toy Story (1995)", code=1), LEARNED, with_codes=True)
    )


def test_learned_style_without_a_published_code_score_falls_back_to_text_only(
    tmp_path: Path, scorer: Any, snapshot_factory: Any
) -> None:
    DirectoryPublisher(tmp_path).publish(snapshot_factory(prompt_style=LEARNED))
    response = predict(tmp_path, scorer, user_id="u1", item_ids=["i3"])
    text_only = render_prompt(U1, CandidateItem(title="Brand New (2024)"), LEARNED, with_codes=False)
    assert response.cold == ["i3"] and response.scores[0].score == pseudo_score(text_only)


def test_learned_style_blends_a_candidate_with_the_unknown_code_with_the_cold_weights(
    tmp_path: Path, scorer: Any, snapshot_factory: Any
) -> None:
    """Same wording for both candidates, but the one listed in `cold` gets the cold weights."""
    DirectoryPublisher(tmp_path).publish(
        snapshot_factory(fusion=FUSION, code_score=FUSION.codes, prompt_style=LEARNED)
    )
    response = predict(tmp_path, scorer, user_id="u1", item_ids=["i1", "i3"])
    assert response.cold == ["i3"] and len(scorer.calls[0]) == 1
    warm, cold = response.scores
    assert warm.score == pytest.approx(by_hand(warm.p_yes, -2, FUSION.warm), rel=1e-12)
    # i3 was prompted with the unknown item code 0x0000FFFF: 16 bits differ from u1 -> inner 0.
    assert cold.p_yes == pseudo_score(
        render_prompt(U1, CandidateItem(title="Brand New (2024)", code=0x0000FFFF), LEARNED, with_codes=True)
    )
    assert cold.score == pytest.approx(by_hand(cold.p_yes, 0, FUSION.cold), rel=1e-12)
